"""Xception (Chollet 2017), layer for layer as Keras 3 `keras.applications.Xception` builds it.

Entry flow: two plain 3x3 convolutions ("valid" padding, the first with stride 2), then three downsampling blocks
(separable convolutions, a 3x3/2 "same" max pool, and a 1x1/2 convolution + BN on the shortcut); middle flow: eight
identity blocks of three ReLU-separable-BN units at 728 channels; exit flow: one more downsampling block and two
separable convolutions to 2048 channels. No convolution has a bias; BatchNorm epsilon is Keras's 1e-3. The first
entry block has no ReLU before its first separable convolution, as in Keras (its input is already rectified).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_pooling
from asemble_jax.models.baseline_blocks import (
    KERAS_BN_EPSILON,
    KERAS_BN_MOMENTUM,
    ConvBN,
    KerasApplication,
    SeparableConv,
)
from asemble_jax.models.registry import register

MIDDLE_FLOW_BLOCKS = 8
MIDDLE_FLOW_WIDTH = 728


class SeparableBN(nnx.Module):
    """Separable convolution then BatchNorm: the unit Xception repeats; the ReLU placement is the caller's."""

    def __init__(self, in_features: int, out_features: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = SeparableConv(in_features, out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn = nnx.BatchNorm(out_features, momentum=KERAS_BN_MOMENTUM, epsilon=KERAS_BN_EPSILON, dtype=dtype,
                                param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return self.bn(self.conv(x), use_running_average=not train)


class DownsamplingBlock(nnx.Module):
    """[ReLU] sepconv-BN, ReLU, sepconv-BN, 3x3/2 max pool, plus a 1x1/2 conv-BN shortcut of the block input."""

    def __init__(self, in_features: int, mid_features: int, out_features: int, *, relu_first: bool, dtype,
                 param_dtype, rngs: nnx.Rngs):
        self.relu_first = relu_first
        # Created in Keras's order (shortcut first), which the Keras weight port relies on.
        self.shortcut = ConvBN(in_features, out_features, 1, strides=2, padding="SAME", dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
        self.sep1 = SeparableBN(in_features, mid_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.sep2 = SeparableBN(mid_features, out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        shortcut = self.shortcut(x, train=train)
        y = nnx.relu(x) if self.relu_first else x
        y = nnx.relu(self.sep1(y, train=train))
        y = self.sep2(y, train=train)
        return cpu_pooling.max_pool(y, (3, 3), strides=(2, 2), padding="SAME") + shortcut


class MiddleBlock(nnx.Module):
    """Three (ReLU, sepconv, BN) units at constant width, added to the identity."""

    def __init__(self, features: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.units = nnx.List(
            [SeparableBN(features, features, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(3)]
        )

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = x
        for unit in self.units:
            y = unit(nnx.relu(y), train=train)
        return x + y


@register("xception")
class Xception(KerasApplication):
    """Xception classifier returning (logits, aux); aux["features"] holds "stem" (after the two plain
    convolutions), "entry_flow", "middle_flow", "exit_flow" and "last_conv" (= exit_flow, the map Grad-CAM uses),
    each of which `feature_offsets` may offset (see FeatureTaps)."""

    min_input_size = 71
    FEATURE_NAMES = ("stem", "entry_flow", "middle_flow", "exit_flow", "last_conv")

    def __init__(self, *, num_classes: int = 2, in_channels: int = 1, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.in_channels = in_channels
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem1 = ConvBN(in_channels, 32, 3, strides=2, **common)
        self.stem2 = ConvBN(32, 64, 3, **common)
        self.entry_flow = nnx.List([
            DownsamplingBlock(64, 128, 128, relu_first=False, **common),
            DownsamplingBlock(128, 256, 256, relu_first=True, **common),
            DownsamplingBlock(256, MIDDLE_FLOW_WIDTH, MIDDLE_FLOW_WIDTH, relu_first=True, **common),
        ])
        self.middle_flow = nnx.List([MiddleBlock(MIDDLE_FLOW_WIDTH, **common) for _ in range(MIDDLE_FLOW_BLOCKS)])
        self.exit_block = DownsamplingBlock(MIDDLE_FLOW_WIDTH, MIDDLE_FLOW_WIDTH, 1024, relu_first=True, **common)
        self.exit_sep1 = SeparableBN(1024, 1536, **common)
        self.exit_sep2 = SeparableBN(1536, 2048, **common)
        self.head = nnx.Linear(2048, num_classes, **common)

    def __call__(self, images: jax.Array, *, train: bool = False,
                 feature_offsets: Mapping[str, jax.Array] | None = None) -> tuple[jax.Array, dict]:
        tap = self._feature_taps(images, feature_offsets)
        x = nnx.relu(self.stem1(images, train=train))
        x = tap("stem", nnx.relu(self.stem2(x, train=train)))
        for block in self.entry_flow:
            x = block(x, train=train)
        x = tap("entry_flow", x)
        for block in self.middle_flow:
            x = block(x, train=train)
        x = tap("middle_flow", x)
        x = self.exit_block(x, train=train)
        x = nnx.relu(self.exit_sep1(x, train=train))
        x = tap("exit_flow", nnx.relu(self.exit_sep2(x, train=train)))
        x = tap("last_conv", x)
        logits = self.head(jnp.mean(x, axis=(1, 2)))
        return logits.astype(jnp.float32), {"features": tap.features}
