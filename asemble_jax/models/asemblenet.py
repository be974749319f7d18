"""ASembleNet: three parallel branches over the same image, fused late (SPEC.md, "Model").

    W  wide ResNet (wide_resnet.py)   -> global average of its last stage
    C  ConvNeXt (convnext.py)         -> LayerNorm of the global average of its last stage
    V  ViT (vit.py)                   -> class-token embedding
    fused = concat(W, C, V) -> SE-style gate ("attention calibration") -> dropout -> dense -> logits

Ablation switches: use_se (every SE module of W and C and the fusion gate), use_wide_resnet, use_convnext,
use_vit. A switched-off part is never built, so its parameters do not exist.

`model(images, train=...)` returns (logits, aux). aux["features"] holds, for the branches that exist:
    "wide_resnet"  last W stage map after its final BN + ReLU, (B, H/16, W/16, C_w)
    "convnext"     last C stage map, (B, H/2^(1+stages), ..., C_c)
    "vit_tokens"   final-LayerNorm patch tokens without the class token, (B, N, D)
    "vit_grid"     the same tokens on the patch grid, (B, H/patch, W/patch, D)
    "vit_class"    the class-token embedding, (B, D)
    "fused"        the concatenated branch embeddings before the gate, (B, F)
and, with use_se, aux["fusion_gate"] holds the gate's weights in (0, 1), (B, F).
Logits are float32 whatever the compute dtype.

Grad-CAM needs gradients with respect to intermediate maps: `model(images, feature_offsets={name: zeros})` adds
each array to the named map where the map is computed, before anything uses it, so that jax.grad with respect to
the offsets (at zero) is the gradient with respect to the maps, with plain JAX on any Flax version. Names:
    "wide_resnet", "convnext"  the maps above
    "vit_attention_input"      the tokens entering the last ViT block's attention, after its LayerNorm,
                               (B, 1 + N, D), class token first: pytorch-grad-cam's ViT layer (blocks[-1].norm1;
                               the class token never sees the final patch tokens, so their gradient is zero).
                               It is in aux["features"] only when it is offset: it exists for Grad-CAM.
`model.offset_features()` lists the names this model takes (one per built branch).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models.convnext import ConvNeXt
from asemble_jax.models.layers import DEFAULT_SE_REDUCTION, SqueezeExcitation, squeeze_channels_for
from asemble_jax.models.registry import register
from asemble_jax.models.vit import VisionTransformer
from asemble_jax.models.wide_resnet import WideResNet

OFFSET_FEATURES = ("wide_resnet", "convnext", "vit_attention_input")


@register("asemblenet")
class ASembleNet(nnx.Module):
    """The hybrid classifier; see the module docstring for the data flow and the aux names."""

    # tiny: the test preset (64x64). small: the CPU demo, meant for 128x128 inputs. paper: about ResNet50's
    # size (~25M parameters) for GPU/TPU runs at 256x256. Measured numbers: results/models/table.md.
    PRESETS = {
        "tiny": dict(image_size=64, wrn_depth=10, wrn_widen_factor=1, wrn_stem_channels=8,
                     convnext_depths=(1, 1), convnext_dims=(16, 32), vit_patch_size=16, vit_dim=32, vit_depth=1,
                     vit_num_heads=2),
        "small": dict(image_size=128, wrn_depth=10, wrn_widen_factor=2, wrn_stem_channels=16,
                      convnext_depths=(1, 1, 2, 1), convnext_dims=(24, 48, 96, 192), vit_patch_size=16,
                      vit_dim=96, vit_depth=2, vit_num_heads=3, convnext_drop_path_rate=0.05,
                      vit_drop_path_rate=0.05),
        "paper": dict(image_size=256, wrn_depth=16, wrn_widen_factor=6, wrn_stem_channels=64,
                      convnext_depths=(2, 2, 4, 2), convnext_dims=(64, 128, 256, 512), vit_patch_size=16,
                      vit_dim=384, vit_depth=6, vit_num_heads=6, convnext_drop_path_rate=0.1,
                      vit_drop_path_rate=0.1),
    }

    def __init__(self, *, num_classes: int = 2, in_channels: int = 1, image_size: int = 256,
                 use_se: bool = True, use_wide_resnet: bool = True, use_convnext: bool = True,
                 use_vit: bool = True, se_reduction: int = DEFAULT_SE_REDUCTION,
                 wrn_depth: int = 16, wrn_widen_factor: int = 4, wrn_stem_channels: int = 64,
                 convnext_depths: Sequence[int] = (2, 2, 4, 2), convnext_dims: Sequence[int] = (64, 128, 256, 512),
                 convnext_drop_path_rate: float = 0.0, convnext_layer_scale_init: float = 1e-6,
                 vit_patch_size: int = 16, vit_dim: int = 384, vit_depth: int = 6, vit_num_heads: int = 6,
                 vit_drop_path_rate: float = 0.0, fusion_dropout_rate: float = 0.2,
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if not (use_wide_resnet or use_convnext or use_vit):
            raise ValueError("ASembleNet needs at least one branch: use_wide_resnet, use_convnext and use_vit "
                             "are all False")
        if num_classes < 1 or in_channels < 1 or image_size < 1:
            raise ValueError(f"num_classes, in_channels and image_size must be >= 1, got {num_classes}, "
                             f"{in_channels} and {image_size}")
        if not 0.0 <= fusion_dropout_rate < 1.0:
            raise ValueError(f"fusion_dropout_rate must be in [0, 1), got {fusion_dropout_rate}")
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        self.in_channels = in_channels
        self.wide_resnet = WideResNet(
            in_channels=in_channels, depth=wrn_depth, widen_factor=wrn_widen_factor,
            stem_channels=wrn_stem_channels, use_se=use_se, se_reduction=se_reduction, **dtypes, rngs=rngs,
        ) if use_wide_resnet else None
        self.convnext = ConvNeXt(
            in_channels=in_channels, depths=tuple(convnext_depths), dims=tuple(convnext_dims),
            drop_path_rate=convnext_drop_path_rate, layer_scale_init=convnext_layer_scale_init, use_se=use_se,
            se_reduction=se_reduction, **dtypes, rngs=rngs,
        ) if use_convnext else None
        self.vit = VisionTransformer(
            in_channels=in_channels, image_size=image_size, patch_size=vit_patch_size, dim=vit_dim,
            depth=vit_depth, num_heads=vit_num_heads, drop_path_rate=vit_drop_path_rate, **dtypes, rngs=rngs,
        ) if use_vit else None
        fused_width = sum(branch.embedding_width for branch in (self.wide_resnet, self.convnext, self.vit)
                          if branch is not None)
        self.fusion_gate = SqueezeExcitation(fused_width, squeeze_channels_for(fused_width, se_reduction),
                                             **dtypes, rngs=rngs) if use_se else None
        self.fusion_dropout = nnx.Dropout(fusion_dropout_rate, rngs=rngs)
        self.classifier = nnx.Linear(fused_width, num_classes, **dtypes, rngs=rngs)

    def __call__(self, images: jax.Array, *, train: bool = False,
                 feature_offsets: Mapping[str, jax.Array] | None = None) -> tuple[jax.Array, dict]:
        if images.ndim != 4 or images.shape[-1] != self.in_channels:
            raise ValueError(f"ASembleNet expects images shaped (batch, height, width, {self.in_channels}), got "
                             f"{tuple(images.shape)}")
        offsets = dict(feature_offsets or {})
        self._check_offsets(offsets)
        features, embeddings = {}, []
        if self.wide_resnet is not None:
            features["wide_resnet"], pooled = self.wide_resnet(images, train=train,
                                                               feature_offset=offsets.get("wide_resnet"))
            embeddings.append(pooled)
        if self.convnext is not None:
            features["convnext"], pooled = self.convnext(images, train=train, feature_offset=offsets.get("convnext"))
            embeddings.append(pooled)
        if self.vit is not None:
            tokens, class_embedding, attention_input = self.vit(
                images, train=train, attention_input_offset=offsets.get("vit_attention_input"))
            if "vit_attention_input" in offsets:
                features["vit_attention_input"] = attention_input
            grid = self.vit.grid_size
            features["vit_tokens"] = tokens
            features["vit_grid"] = tokens.reshape(tokens.shape[0], grid, grid, tokens.shape[-1])
            features["vit_class"] = class_embedding
            embeddings.append(class_embedding)
        fused = jnp.concatenate(embeddings, axis=-1)
        features["fused"] = fused
        aux = {"features": features}
        if self.fusion_gate is not None:
            aux["fusion_gate"] = self.fusion_gate.gate(fused)
            fused = fused * aux["fusion_gate"]
        logits = self.classifier(self.fusion_dropout(fused, deterministic=not train))
        return logits.astype(jnp.float32), aux

    def offset_features(self) -> tuple[str, ...]:
        """The names `feature_offsets` accepts: those of OFFSET_FEATURES whose branch this model has."""
        branches = {"wide_resnet": self.wide_resnet, "convnext": self.convnext, "vit_attention_input": self.vit}
        return tuple(name for name in OFFSET_FEATURES if branches[name] is not None)

    def _check_offsets(self, offsets: Mapping[str, jax.Array]) -> None:
        unknown = sorted(set(offsets) - set(self.offset_features()))
        if unknown:
            raise ValueError(f"feature_offsets names {', '.join(unknown)}, which this ASembleNet does not have; "
                             f"it takes offsets for {', '.join(self.offset_features())}")
