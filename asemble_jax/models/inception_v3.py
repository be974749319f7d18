"""InceptionV3 (Szegedy et al. 2016), layer for layer as Keras 3 `keras.applications.InceptionV3` builds it.

Every convolution is Keras's `conv2d_bn`: no bias, BatchNorm with epsilon 1e-3 and no scale (gamma), then ReLU.
Blocks are named as Keras names their outputs: mixed0-2 (35x35 grid at 299 px), mixed3 (reduction), mixed4-7
(factorised 7x7), mixed8 (reduction), mixed9-10 (expanded 3x3). Branches are concatenated in Keras's order, and
their pooling is Keras's: 3x3/1 "same" average pooling that averages over the valid pixels only, and 3x3/2 "valid"
max pooling in the reductions.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_pooling
from asemble_jax.models.baseline_blocks import ConvBN, KerasApplication
from asemble_jax.models.registry import register

# A convolution unit: (output features, (kernel height, kernel width), stride, padding).
Unit = tuple[int, tuple[int, int], int, str]


def unit(features: int, kernel: tuple[int, int], stride: int = 1, padding: str = "SAME") -> Unit:
    return (features, kernel, stride, padding)


class Branch(nnx.Module):
    """An optional pooling followed by a chain of conv-BN-ReLU units."""

    def __init__(self, in_features: int, units: list[Unit], *, pool: str | None = None, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.pool = pool
        convs = []
        features = in_features
        for out_features, kernel, stride, padding in units:
            convs.append(ConvBN(features, out_features, kernel, strides=stride, padding=padding, bn_scale=False,
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs))
            features = out_features
        self.convs = nnx.List(convs)
        self.out_features = features

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.pool == "avg":
            x = nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)
        elif self.pool == "max":
            x = cpu_pooling.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        for conv in self.convs:
            x = nnx.relu(conv(x, train=train))
        return x


class SplitBranch(nnx.Module):
    """A trunk whose output feeds a 1x3 and a 3x1 head side by side, concatenated (mixed9 and mixed10)."""

    def __init__(self, in_features: int, trunk: list[Unit], head_features: int, *, dtype, param_dtype,
                 rngs: nnx.Rngs):
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.trunk = Branch(in_features, trunk, **common)
        self.heads = nnx.List([
            Branch(self.trunk.out_features, [unit(head_features, (1, 3))], **common),
            Branch(self.trunk.out_features, [unit(head_features, (3, 1))], **common),
        ])
        self.out_features = 2 * head_features

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.trunk(x, train=train)
        return jnp.concatenate([head(x, train=train) for head in self.heads], axis=-1)


class Mixed(nnx.Module):
    """Parallel branches over the same input, concatenated along channels in the order given."""

    def __init__(self, branches: list[Branch | SplitBranch]):
        self.branches = nnx.List(branches)
        self.out_features = sum(branch.out_features for branch in branches)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return jnp.concatenate([branch(x, train=train) for branch in self.branches], axis=-1)


def inception_a(in_features: int, pool_features: int, **common) -> Mixed:
    return Mixed([
        Branch(in_features, [unit(64, (1, 1))], **common),
        Branch(in_features, [unit(48, (1, 1)), unit(64, (5, 5))], **common),
        Branch(in_features, [unit(64, (1, 1)), unit(96, (3, 3)), unit(96, (3, 3))], **common),
        Branch(in_features, [unit(pool_features, (1, 1))], pool="avg", **common),
    ])


def reduction_a(in_features: int, **common) -> Mixed:
    return Mixed([
        Branch(in_features, [unit(384, (3, 3), 2, "VALID")], **common),
        Branch(in_features, [unit(64, (1, 1)), unit(96, (3, 3)), unit(96, (3, 3), 2, "VALID")], **common),
        Branch(in_features, [], pool="max", **common),
    ])


def inception_c(in_features: int, width: int, **common) -> Mixed:
    return Mixed([
        Branch(in_features, [unit(192, (1, 1))], **common),
        Branch(in_features, [unit(width, (1, 1)), unit(width, (1, 7)), unit(192, (7, 1))], **common),
        Branch(in_features, [unit(width, (1, 1)), unit(width, (7, 1)), unit(width, (1, 7)), unit(width, (7, 1)),
                             unit(192, (1, 7))], **common),
        Branch(in_features, [unit(192, (1, 1))], pool="avg", **common),
    ])


def reduction_b(in_features: int, **common) -> Mixed:
    return Mixed([
        Branch(in_features, [unit(192, (1, 1)), unit(320, (3, 3), 2, "VALID")], **common),
        Branch(in_features, [unit(192, (1, 1)), unit(192, (1, 7)), unit(192, (7, 1)), unit(192, (3, 3), 2, "VALID")],
               **common),
        Branch(in_features, [], pool="max", **common),
    ])


def inception_e(in_features: int, **common) -> Mixed:
    return Mixed([
        Branch(in_features, [unit(320, (1, 1))], **common),
        SplitBranch(in_features, [unit(384, (1, 1))], 384, **common),
        SplitBranch(in_features, [unit(448, (1, 1)), unit(384, (3, 3))], 384, **common),
        Branch(in_features, [unit(192, (1, 1))], pool="avg", **common),
    ])


@register("inception_v3")
class InceptionV3(KerasApplication):
    """InceptionV3 classifier returning (logits, aux); aux["features"] holds "stem", "mixed0".."mixed10" and
    "last_conv" (= mixed10, the map Grad-CAM uses), each of which `feature_offsets` may offset (see FeatureTaps)."""

    min_input_size = 75
    FEATURE_NAMES = ("stem", *(f"mixed{index}" for index in range(11)), "last_conv")

    def __init__(self, *, num_classes: int = 2, in_channels: int = 1, dtype: jnp.dtype = jnp.float32,
                 param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.in_channels = in_channels
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # Max pools follow the third and the fifth unit.
        self.stem = Branch(in_channels, [unit(32, (3, 3), 2, "VALID"), unit(32, (3, 3), 1, "VALID"),
                                         unit(64, (3, 3))], **common)
        self.stem_after_pool = Branch(64, [unit(80, (1, 1), 1, "VALID"), unit(192, (3, 3), 1, "VALID")], **common)
        mixed = [inception_a(192, 32, **common)]
        mixed.append(inception_a(mixed[-1].out_features, 64, **common))
        mixed.append(inception_a(mixed[-1].out_features, 64, **common))
        mixed.append(reduction_a(mixed[-1].out_features, **common))
        for width in (128, 160, 160, 192):
            mixed.append(inception_c(mixed[-1].out_features, width, **common))
        mixed.append(reduction_b(mixed[-1].out_features, **common))
        mixed.append(inception_e(mixed[-1].out_features, **common))
        mixed.append(inception_e(mixed[-1].out_features, **common))
        self.mixed = nnx.List(mixed)
        self.head = nnx.Linear(mixed[-1].out_features, num_classes, **common)

    def __call__(self, images: jax.Array, *, train: bool = False,
                 feature_offsets: Mapping[str, jax.Array] | None = None) -> tuple[jax.Array, dict]:
        tap = self._feature_taps(images, feature_offsets)
        x = self.stem(images, train=train)
        x = cpu_pooling.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        x = self.stem_after_pool(x, train=train)
        x = tap("stem", cpu_pooling.max_pool(x, (3, 3), strides=(2, 2), padding="VALID"))
        for index, block in enumerate(self.mixed):
            x = tap(f"mixed{index}", block(x, train=train))
        x = tap("last_conv", x)
        logits = self.head(jnp.mean(x, axis=(1, 2)))
        return logits.astype(jnp.float32), {"features": tap.features}
