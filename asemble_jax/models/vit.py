"""Branch V of ASembleNet: a Vision Transformer (Dosovitskiy et al. 2021) with pre-LN encoder blocks.

EncoderBlock is timm's vision_transformer.Block and torchvision's EncoderBlock, number for number (checked by
tests/test_golden_blocks.py). The attention keeps the fused query/key/value projection of both references
(output features ordered [q | k | v], heads contiguous inside each), so their weights port without reshuffling.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models.layers import StochasticDepth, transformer_layer_norm

_TRUNCATED_NORMAL_INIT = nnx.initializers.truncated_normal(stddev=0.02)


class SelfAttention(nnx.Module):
    """Multi-head self-attention over (B, N, D) tokens. Parameters: qkv (D -> 3D), projection (D -> D)."""

    def __init__(self, dim: int, num_heads: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"ViT width {dim} is not divisible by its {num_heads} attention heads")
        dense = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=_TRUNCATED_NORMAL_INIT, rngs=rngs)
        self.num_heads = num_heads
        self.qkv = nnx.Linear(dim, 3 * dim, **dense)
        self.projection = nnx.Linear(dim, dim, **dense)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        attended = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
        return self.projection(attended.reshape(batch, length, dim))


class EncoderBlock(nnx.Module):
    """x + drop_path(attention(LN(x))), then x + drop_path(MLP(LN(x))) with a 4x MLP and exact GELU.
    Parameter names: attention_norm, attention, mlp_norm, mlp_expand, mlp_project."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: int = 4, drop_path_rate: float = 0.0,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.attention_norm = transformer_layer_norm(dim, **dtypes, rngs=rngs)
        self.attention = SelfAttention(dim, num_heads, **dtypes, rngs=rngs)
        self.mlp_norm = transformer_layer_norm(dim, **dtypes, rngs=rngs)
        self.mlp_expand = nnx.Linear(dim, mlp_ratio * dim, kernel_init=_TRUNCATED_NORMAL_INIT, **dtypes,
                                     rngs=rngs)
        self.mlp_project = nnx.Linear(mlp_ratio * dim, dim, kernel_init=_TRUNCATED_NORMAL_INIT, **dtypes,
                                      rngs=rngs)
        self.drop_path = StochasticDepth(drop_path_rate, rngs=rngs)

    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        return self.from_attention_input(tokens, self.attention_norm(tokens), train=train)

    def from_attention_input(self, tokens: jax.Array, attention_input: jax.Array, *,
                             train: bool = False) -> jax.Array:
        """The block, given `attention_input` = attention_norm(tokens) computed by the caller, so that the
        caller can keep and perturb the tokens that the attention sees (Grad-CAM's ViT layer)."""
        deterministic = not train
        tokens = tokens + self.drop_path(self.attention(attention_input), deterministic=deterministic)
        mlp = self.mlp_project(jax.nn.gelu(self.mlp_expand(self.mlp_norm(tokens)), approximate=False))
        return tokens + self.drop_path(mlp, deterministic=deterministic)


class VisionTransformer(nnx.Module):
    """patch x patch stride-patch embedding, class token, learned position embedding, `depth` encoder blocks,
    final LayerNorm. Returns (patch tokens (B, N, D) without the class token, class-token embedding (B, D),
    attention input of the last block (B, 1 + N, D), class token first).

    That last one is where Grad-CAM reads a ViT (pytorch-grad-cam's `blocks[-1].norm1`): the class token leaves
    the last block without ever seeing the final patch tokens again, so its gradient with respect to them is
    zero, while the last attention mixes these tokens into it. `attention_input_offset`, when given, is added
    to them before the attention uses them: at zero it changes nothing, and the gradient with respect to it is
    the gradient with respect to those tokens.

    The position embedding has one row per patch of an image_size x image_size input, so the input size is part
    of the architecture: a patch size that does not divide it is refused at construction, another input size
    at call time.
    """

    def __init__(self, *, in_channels: int, image_size: int, patch_size: int = 16, dim: int = 384,
                 depth: int = 6, num_heads: int = 6, drop_path_rate: float = 0.0, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"ViT patch size {patch_size} does not divide the input size {image_size}; choose "
                             f"a divisor of {image_size} (e.g. 16 for 256x256 inputs)")
        if depth < 1:
            raise ValueError(f"ViT depth must be >= 1, got {depth}")
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.embedding_width = dim
        self.patch_embedding = nnx.Conv(in_channels, dim, (patch_size, patch_size), strides=patch_size,
                                        padding="VALID", **dtypes, rngs=rngs)
        self.class_token = nnx.Param(jnp.zeros((1, 1, dim), param_dtype))
        self.position_embedding = nnx.Param(
            _TRUNCATED_NORMAL_INIT(rngs.params(), (1, self.grid_size ** 2 + 1, dim), param_dtype))
        # Linearly increasing drop-path rate over the blocks, as in DeiT and timm.
        rates = [drop_path_rate * index / max(1, depth - 1) for index in range(depth)]
        self.blocks = nnx.List([EncoderBlock(dim, num_heads, drop_path_rate=rate, **dtypes, rngs=rngs)
                                for rate in rates])
        self.norm = transformer_layer_norm(dim, **dtypes, rngs=rngs)
        self.dtype = dtype

    def __call__(self, images: jax.Array, *, train: bool = False, attention_input_offset: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
        if images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT was built for {self.image_size}x{self.image_size} inputs (its position "
                             f"embedding has one row per patch), got {images.shape[1]}x{images.shape[2]}")
        patches = self.patch_embedding(images)
        batch, _, _, dim = patches.shape
        class_token = jnp.broadcast_to(self.class_token[...].astype(self.dtype), (batch, 1, dim))
        tokens = jnp.concatenate([class_token, patches.reshape(batch, -1, dim)], axis=1)
        tokens = tokens + self.position_embedding[...].astype(self.dtype)
        *leading_blocks, last_block = self.blocks
        for block in leading_blocks:
            tokens = block(tokens, train=train)
        attention_input = last_block.attention_norm(tokens)
        if attention_input_offset is not None:
            attention_input = attention_input + attention_input_offset
        tokens = self.norm(last_block.from_attention_input(tokens, attention_input, train=train))
        return tokens[:, 1:], tokens[:, 0], attention_input
