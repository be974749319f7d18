"""Building blocks shared by the three Keras-application baselines (ResNet50, Xception, InceptionV3).

They mirror Keras layer semantics exactly, so that weights ported from Keras give the same numbers: kernels in
(height, width, in, out) layout, TF-style "SAME" padding (the extra row/column goes bottom/right on stride 2),
BatchNorm momentum 0.99 with the Keras meaning (moving = 0.99 * moving + 0.01 * batch) and a per-model epsilon.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_convolution

KERAS_BN_EPSILON = 1e-3
KERAS_BN_MOMENTUM = 0.99


class ConvBN(nnx.Module):
    """Conv2D followed by BatchNormalization, the unit every baseline is built from; activation is the caller's."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | tuple[int, int],
        *,
        strides: int = 1,
        padding: str = "VALID",
        use_bias: bool = False,
        bn_epsilon: float = KERAS_BN_EPSILON,
        bn_scale: bool = True,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.conv = nnx.Conv(
            in_features, out_features, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
            conv_general_dilated=cpu_convolution.conv_general_dilated, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(
            out_features, momentum=KERAS_BN_MOMENTUM, epsilon=bn_epsilon, use_scale=bn_scale,
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.bn(self.conv(x), use_running_average=not train)


class SeparableConv(nnx.Module):
    """Keras SeparableConv2D without bias, depth multiplier 1: a depthwise 3x3 then a pointwise 1x1, no
    nonlinearity in between."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kernel_size: int = 3,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.depthwise = nnx.Conv(
            in_features, in_features, (kernel_size, kernel_size), padding="SAME", feature_group_count=in_features,
            conv_general_dilated=cpu_convolution.conv_general_dilated, use_bias=False, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs,
        )
        self.pointwise = nnx.Conv(
            in_features, out_features, (1, 1), use_bias=False,
            conv_general_dilated=cpu_convolution.conv_general_dilated, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pointwise(self.depthwise(x))


def check_images(images: jax.Array, *, model: str, in_channels: int, min_size: int) -> None:
    """Rejects a batch the model cannot take, with the reason, before a shape error deep inside XLA would."""
    if images.ndim != 4:
        raise ValueError(f"{model} expects images shaped (batch, height, width, channels); got shape {images.shape}")
    height, width, channels = images.shape[1:]
    if channels != in_channels:
        raise ValueError(f"{model} was built for {in_channels} input channel(s); got {channels} (shape {images.shape})")
    if height < min_size or width < min_size:
        raise ValueError(
            f"{model} needs images of at least {min_size}x{min_size} pixels (as in Keras applications); "
            f"got {height}x{width}"
        )



class FeatureTaps:
    """Collects a forward pass's named maps into aux["features"], first adding the caller's offset for that name
    if one was given: jax.grad with respect to a zero offset is the gradient with respect to the map (Grad-CAM),
    the same `feature_offsets` contract as ASembleNet's."""

    def __init__(self, model: str, names: Sequence[str], offsets: Mapping[str, jax.Array] | None):
        self.offsets = dict(offsets or {})
        unknown = sorted(set(self.offsets) - set(names))
        if unknown:
            raise ValueError(f"feature_offsets names {', '.join(unknown)}, which {model} does not have; it takes "
                             f"offsets for {', '.join(names)}")
        self.features: dict[str, jax.Array] = {}

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        if name in self.offsets:
            # A Python scalar is a valid offset too (Grad-CAM probes shapes with 0.0); the map keeps its dtype.
            x = x + jnp.asarray(self.offsets[name], dtype=x.dtype)
        self.features[name] = x
        return x


class KerasApplication(nnx.Module):
    """What the three baselines share around their layers: presets, the input check, and the named maps that
    `feature_offsets` (Grad-CAM's protocol, see asemble_jax/gradcam.py) may offset."""

    # A Keras application has one architecture; the presets exist so that every config (which names tiny, small
    # or paper for every model) can build a baseline, and differ only in the input size the config chooses.
    PRESETS = {"tiny": {}, "small": {}, "paper": {}}
    FEATURE_NAMES: tuple[str, ...]
    min_input_size: int
    in_channels: int

    def offset_features(self) -> tuple[str, ...]:
        return self.FEATURE_NAMES

    def _feature_taps(self, images: jax.Array, feature_offsets: Mapping[str, jax.Array] | None) -> FeatureTaps:
        """Checks the batch, then returns the recorder of this forward pass's named maps."""
        model = type(self).__name__
        check_images(images, model=model, in_channels=self.in_channels, min_size=self.min_input_size)
        return FeatureTaps(model, self.FEATURE_NAMES, feature_offsets)
