"""Branch W of ASembleNet: a wide residual network (Zagoruyko & Komodakis 2016) of pre-activation basic blocks,
with a Squeeze-and-Excitation module at the end of every block's residual branch (the SE-ResNet placement of
Hu et al. 2018: the gate re-weights the residual before it is added to the shortcut).

The CIFAR WRN runs its first stage at full resolution, which at 256x256 would cost more than the rest of the
model together; this branch uses the ImageNet ResNet stem instead (7x7/2 conv, BN, ReLU, 3x3/2 max pool), so the
three stages run at 1/4, 1/8 and 1/16 of the input size, like the ImageNet WRNs.
Convolutions pad explicitly and symmetrically (as torch does), not with "SAME", which pads stride-2 convs
bottom/right only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_convolution, cpu_pooling
from asemble_jax.models.layers import SqueezeExcitation, squeeze_channels_for

# torch's BatchNorm defaults (momentum 0.1 on the new batch = 0.9 on the running average in Flax), as in WRN.
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5
STAGE_BASE_WIDTHS = (16, 32, 64)
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def blocks_per_stage(depth: int) -> int:
    """WRN-depth-k has (depth - 4) / 6 basic blocks per stage (Zagoruyko & Komodakis's naming)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    return (depth - 4) // 6


def _batch_norm(channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, *, dtype, param_dtype,
          rngs: nnx.Rngs) -> nnx.Conv:
    pad = (kernel - 1) // 2
    return nnx.Conv(in_channels, out_channels, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                    use_bias=False, kernel_init=_CONV_INIT, conv_general_dilated=cpu_convolution.conv_general_dilated,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class WideBasicBlock(nnx.Module):
    """BN -> ReLU -> 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> SE, plus a shortcut: the identity, or a
    1x1 projection of the pre-activated input when the width or resolution changes.
    Parameter names: norm1, conv1, norm2, conv2, shortcut (or None), excitation (or None)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, use_se: bool, se_reduction: int,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = _batch_norm(in_channels, **dtypes, rngs=rngs)
        self.conv1 = _conv(in_channels, out_channels, 3, stride, **dtypes, rngs=rngs)
        self.norm2 = _batch_norm(out_channels, **dtypes, rngs=rngs)
        self.conv2 = _conv(out_channels, out_channels, 3, 1, **dtypes, rngs=rngs)
        self.shortcut = (_conv(in_channels, out_channels, 1, stride, **dtypes, rngs=rngs)
                         if in_channels != out_channels or stride != 1 else None)
        self.excitation = (SqueezeExcitation(out_channels, squeeze_channels_for(out_channels, se_reduction),
                                             **dtypes, rngs=rngs) if use_se else None)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        use_running_average = not train
        activated = jax.nn.relu(self.norm1(x, use_running_average=use_running_average))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        residual = self.conv1(activated)
        residual = self.conv2(jax.nn.relu(self.norm2(residual, use_running_average=use_running_average)))
        if self.excitation is not None:
            residual = self.excitation(residual)
        return shortcut + residual


class WideResNet(nnx.Module):
    """Stem, then three stages of blocks_per_stage(depth) blocks of widths 16k, 32k, 64k (k = widen_factor) at
    strides 1, 2, 2, then the final BN + ReLU that pre-activation networks need. Returns (last stage map after
    that activation (B, H/16, W/16, 64k), its global average (B, 64k)).

    `feature_offset`, when given, is added to that map before anything uses it: at zero it changes nothing, and
    the gradient with respect to it is the gradient with respect to the map (what Grad-CAM needs)."""

    def __init__(self, *, in_channels: int, depth: int = 16, widen_factor: int = 4, stem_channels: int = 64,
                 use_se: bool = True, se_reduction: int = 16, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if widen_factor < 1 or stem_channels < 1:
            raise ValueError(f"wide ResNet widen_factor and stem_channels must be >= 1, got {widen_factor} and "
                             f"{stem_channels}")
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.stem = _conv(in_channels, stem_channels, 7, 2, **dtypes, rngs=rngs)
        self.stem_norm = _batch_norm(stem_channels, **dtypes, rngs=rngs)
        blocks = []
        in_width = stem_channels
        for stage_index, base_width in enumerate(STAGE_BASE_WIDTHS):
            width = base_width * widen_factor
            for block_index in range(blocks_per_stage(depth)):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(WideBasicBlock(in_width, width, stride, use_se=use_se, se_reduction=se_reduction,
                                             **dtypes, rngs=rngs))
                in_width = width
        self.blocks = nnx.List(blocks)
        self.final_norm = _batch_norm(in_width, **dtypes, rngs=rngs)
        self.embedding_width = in_width

    def __call__(self, images: jax.Array, *, train: bool = False,
                 feature_offset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        use_running_average = not train
        x = jax.nn.relu(self.stem_norm(self.stem(images), use_running_average=use_running_average))
        x = cpu_pooling.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x, train=train)
        x = jax.nn.relu(self.final_norm(x, use_running_average=use_running_average))
        if feature_offset is not None:
            x = x + feature_offset
        return x, jnp.mean(x, axis=(1, 2))
