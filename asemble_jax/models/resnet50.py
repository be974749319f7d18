"""ResNet50 (He et al. 2015), layer for layer as Keras 3 `keras.applications.ResNet50` builds it.

Keras's v1 variant: the stride of a downsampling block sits on its first 1x1 convolution (not on the 3x3 as in
"v1.5"), every convolution has a bias, BatchNorm epsilon is 1.001e-5, and the stem pads explicitly with zeros
(3 pixels before the 7x7/2 convolution, 1 before the 3x3/2 max pool, which therefore pools over zeros, not -inf).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_pooling
from asemble_jax.models.baseline_blocks import ConvBN, KerasApplication
from asemble_jax.models.registry import register

RESNET_BN_EPSILON = 1.001e-5
# (bottleneck width, blocks) of stages conv2..conv5; each block expands to 4x its width.
STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), added to the shortcut, then ReLU; the shortcut is a 1x1 convolution + BN
    in the first block of a stage and the identity elsewhere."""

    def __init__(self, in_features: int, width: int, *, stride: int, projection: bool, dtype, param_dtype,
                 rngs: nnx.Rngs):
        def conv_bn(features_in, features_out, kernel, **kwargs):
            return ConvBN(features_in, features_out, kernel, use_bias=True, bn_epsilon=RESNET_BN_EPSILON,
                          dtype=dtype, param_dtype=param_dtype, rngs=rngs, **kwargs)

        # Created in Keras's order (shortcut first), which the Keras weight port relies on.
        self.shortcut = conv_bn(in_features, 4 * width, 1, strides=stride) if projection else None
        self.reduce = conv_bn(in_features, width, 1, strides=stride)
        self.spatial = conv_bn(width, width, 3, padding="SAME")
        self.expand = conv_bn(width, 4 * width, 1)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        shortcut = x if self.shortcut is None else self.shortcut(x, train=train)
        y = nnx.relu(self.reduce(x, train=train))
        y = nnx.relu(self.spatial(y, train=train))
        return nnx.relu(shortcut + self.expand(y, train=train))


@register("resnet50")
class ResNet50(KerasApplication):
    """ResNet50 classifier returning (logits, aux); aux["features"] holds the stem and every stage's output
    ("conv2".."conv5", as Keras names them) and "last_conv" (= conv5, the map Grad-CAM uses), each of which
    `feature_offsets` may offset (see FeatureTaps)."""

    min_input_size = 32
    FEATURE_NAMES = ("stem", "conv2", "conv3", "conv4", "conv5", "last_conv")

    def __init__(self, *, num_classes: int = 2, in_channels: int = 1, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.in_channels = in_channels
        self.stem = ConvBN(in_channels, 64, 7, strides=2, use_bias=True, bn_epsilon=RESNET_BN_EPSILON,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        stages = []
        features = 64
        for index, (width, blocks) in enumerate(STAGES):
            stage = []
            for block in range(blocks):
                first = block == 0
                stride = 2 if first and index > 0 else 1
                stage.append(Bottleneck(features, width, stride=stride, projection=first, dtype=dtype,
                                        param_dtype=param_dtype, rngs=rngs))
                features = 4 * width
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(features, num_classes, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, images: jax.Array, *, train: bool = False,
                 feature_offsets: Mapping[str, jax.Array] | None = None) -> tuple[jax.Array, dict]:
        tap = self._feature_taps(images, feature_offsets)
        x = jnp.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)))
        x = nnx.relu(self.stem(x, train=train))
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = tap("stem", cpu_pooling.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"))
        for index, stage in enumerate(self.stages):
            for block in stage:
                x = block(x, train=train)
            x = tap(f"conv{index + 2}", x)
        x = tap("last_conv", x)
        logits = self.head(jnp.mean(x, axis=(1, 2)))
        return logits.astype(jnp.float32), {"features": tap.features}
