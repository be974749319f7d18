"""Building blocks shared by the ASembleNet branches: Squeeze-and-Excitation, stochastic depth, layer scale.

Every module takes the compute `dtype` and the storage `param_dtype` separately (bfloat16 compute, float32
parameters on GPU/TPU) and receives train/eval as an explicit call argument; none keeps a mode flag.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# ConvNeXt and ViT (timm, torchvision and the original papers) all use this LayerNorm epsilon, not torch's 1e-5.
TRANSFORMER_LAYER_NORM_EPSILON = 1e-6
DEFAULT_SE_REDUCTION = 16
# Below this the squeeze bottleneck of a narrow (tiny-preset) layer would collapse to one or two units.
MIN_SQUEEZE_CHANNELS = 4


def squeeze_channels_for(channels: int, reduction: int = DEFAULT_SE_REDUCTION) -> int:
    """Width of the SE bottleneck for `channels` inputs: channels // reduction, at least MIN_SQUEEZE_CHANNELS."""
    return max(MIN_SQUEEZE_CHANNELS, channels // reduction)


def transformer_layer_norm(features: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm as ConvNeXt and ViT define it: eps 1e-6, two-pass variance (the one-pass formula loses
    digits against the torch references when activations have a large mean)."""
    return nnx.LayerNorm(features, epsilon=TRANSFORMER_LAYER_NORM_EPSILON, use_fast_variance=False,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class SqueezeExcitation(nnx.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): x * sigmoid(W2 relu(W1 mean(x))), the channel gate of
    torchvision.ops.SqueezeExcitation and timm.layers.SqueezeExcite.

    The squeeze averages over every axis between the batch axis and the channel axis, so the same module gates
    a (B, H, W, C) feature map or, with nothing to average, a (B, C) vector (the ASembleNet fusion gate).
    Parameter layout: `reduce` (C -> squeeze_channels) and `expand` (squeeze_channels -> C), both with bias.
    """

    def __init__(self, channels: int, squeeze_channels: int | None = None, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        squeeze_channels = squeeze_channels or squeeze_channels_for(channels)
        self.reduce = nnx.Linear(channels, squeeze_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.expand = nnx.Linear(squeeze_channels, channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def gate(self, x: jax.Array) -> jax.Array:
        """The per-channel weights in (0, 1), shaped to broadcast against `x`."""
        squeezed = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=True)
        return jax.nn.sigmoid(self.expand(jax.nn.relu(self.reduce(squeezed))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gate(x)


class LayerScale(nnx.Module):
    """Per-channel learned scale of a residual branch (Touvron et al. 2021; ConvNeXt's `gamma`), initialised
    small so that every block starts close to the identity."""

    def __init__(self, channels: int, init_value: float = 1e-6, *, dtype=jnp.float32, param_dtype=jnp.float32):
        self.gamma = nnx.Param(jnp.full((channels,), init_value, dtype=param_dtype))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(self.dtype)


class StochasticDepth(nnx.Module):
    """Drop path (Huang et al. 2016): in training, each sample's residual branch is zeroed with probability
    `rate` and the survivors are scaled by 1 / (1 - rate), so that the expectation equals evaluation. One draw
    per sample, shared by all of that sample's positions and channels (timm DropPath, torchvision
    StochasticDepth mode "row"). Random keys come from the `dropout` stream of the Rngs given at construction.
    """

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rngs = rngs["dropout"].fork()

    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep_prob = 1.0 - self.rate
        keep = jax.random.bernoulli(self.rngs(), keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))
