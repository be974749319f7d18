"""Branch C of ASembleNet: ConvNeXt (Liu et al. 2022), channels-last, with an SE module after every block.

ConvNeXtBlock alone is the block of timm's ConvNeXtBlock and torchvision's CNBlock, number for number (checked
by tests/test_golden_blocks.py); the SE module sits outside it, in the stage, so that the block stays comparable.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_convolution
from asemble_jax.models.layers import (
    LayerScale, SqueezeExcitation, StochasticDepth, squeeze_channels_for, transformer_layer_norm)

# ConvNeXt initialises every conv and linear layer with a truncated normal of std 0.02 and zero bias.
_TRUNCATED_NORMAL_INIT = nnx.initializers.truncated_normal(stddev=0.02)


class ConvNeXtBlock(nnx.Module):
    """7x7 depthwise conv -> LayerNorm -> pointwise 4x expansion -> exact GELU -> pointwise projection ->
    layer scale -> stochastic depth, added to the input. Parameter names: depthwise, norm, expand, project,
    layer_scale."""

    def __init__(self, channels: int, *, drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6,
                 mlp_ratio: int = 4, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        dense = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=_TRUNCATED_NORMAL_INIT, rngs=rngs)
        self.depthwise = nnx.Conv(channels, channels, (7, 7), padding=((3, 3), (3, 3)),
                                  feature_group_count=channels,
                                  conv_general_dilated=cpu_convolution.conv_general_dilated, **dense)
        self.norm = transformer_layer_norm(channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.expand = nnx.Linear(channels, mlp_ratio * channels, **dense)
        self.project = nnx.Linear(mlp_ratio * channels, channels, **dense)
        self.layer_scale = LayerScale(channels, layer_scale_init, dtype=dtype, param_dtype=param_dtype)
        self.drop_path = StochasticDepth(drop_path_rate, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        residual = self.norm(self.depthwise(x))
        residual = self.project(jax.nn.gelu(self.expand(residual), approximate=False))
        return x + self.drop_path(self.layer_scale(residual), deterministic=not train)


class ConvNeXtDownsample(nnx.Module):
    """Between stages: LayerNorm, then a 2x2 stride-2 conv that changes the width."""

    def __init__(self, in_channels: int, out_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.norm = transformer_layer_norm(in_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv = nnx.Conv(in_channels, out_channels, (2, 2), strides=2, padding="VALID", dtype=dtype,
                             param_dtype=param_dtype, kernel_init=_TRUNCATED_NORMAL_INIT, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(self.norm(x))


class ConvNeXtStage(nnx.Module):
    """Optional downsampling, then blocks; with use_se an SE module follows each block (`excitations[i]`
    after `blocks[i]`)."""

    def __init__(self, in_channels: int, channels: int, drop_path_rates: Sequence[float], *, downsample: bool,
                 use_se: bool, se_reduction: int, layer_scale_init: float, dtype, param_dtype, rngs: nnx.Rngs):
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.downsample = (ConvNeXtDownsample(in_channels, channels, **dtypes, rngs=rngs) if downsample
                           else None)
        self.blocks = nnx.List([
            ConvNeXtBlock(channels, drop_path_rate=rate, layer_scale_init=layer_scale_init, **dtypes, rngs=rngs)
            for rate in drop_path_rates])
        self.excitations = nnx.List([
            SqueezeExcitation(channels, squeeze_channels_for(channels, se_reduction), **dtypes, rngs=rngs)
            for _ in drop_path_rates]) if use_se else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.downsample is not None:
            x = self.downsample(x)
        for index, block in enumerate(self.blocks):
            x = block(x, train=train)
            if self.excitations is not None:
                x = self.excitations[index](x)
        return x


class ConvNeXt(nnx.Module):
    """4x4/4 patchify stem + LayerNorm, then len(depths) stages (the first at stride 4, each later one halving
    the resolution). Returns (last stage map (B, H/2^(1+len(depths)), ..., dims[-1]), pooled embedding), the
    embedding being the LayerNorm of the global average, as in ConvNeXt's classification head.

    `feature_offset`, when given, is added to the last stage map before anything uses it: at zero it changes
    nothing, and the gradient with respect to it is the gradient with respect to the map (what Grad-CAM needs)."""

    def __init__(self, *, in_channels: int, depths: Sequence[int], dims: Sequence[int],
                 drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6, use_se: bool = True,
                 se_reduction: int = 16, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if len(depths) != len(dims) or not depths or min(depths) < 1 or min(dims) < 1:
            raise ValueError(f"ConvNeXt needs as many stage depths as stage widths, all >= 1; got depths="
                             f"{tuple(depths)}, dims={tuple(dims)}")
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.stem = nnx.Conv(in_channels, dims[0], (4, 4), strides=4, padding="VALID",
                             kernel_init=_TRUNCATED_NORMAL_INIT, **dtypes, rngs=rngs)
        self.stem_norm = transformer_layer_norm(dims[0], **dtypes, rngs=rngs)
        # Linearly increasing drop-path rate over all blocks, as in the ConvNeXt paper.
        total_blocks = sum(depths)
        rates = [drop_path_rate * index / max(1, total_blocks - 1) for index in range(total_blocks)]
        stages = []
        for stage_index, (depth, width) in enumerate(zip(depths, dims)):
            first = sum(depths[:stage_index])
            stages.append(ConvNeXtStage(
                dims[max(0, stage_index - 1)], width, rates[first:first + depth], downsample=stage_index > 0,
                use_se=use_se, se_reduction=se_reduction, layer_scale_init=layer_scale_init, **dtypes,
                rngs=rngs))
        self.stages = nnx.List(stages)
        self.head_norm = transformer_layer_norm(dims[-1], **dtypes, rngs=rngs)
        self.embedding_width = dims[-1]

    def __call__(self, images: jax.Array, *, train: bool = False,
                 feature_offset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        x = self.stem_norm(self.stem(images))
        for stage in self.stages:
            x = stage(x, train=train)
        if feature_offset is not None:
            x = x + feature_offset
        return x, self.head_norm(jnp.mean(x, axis=(1, 2)))
