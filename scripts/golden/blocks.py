"""Golden fixtures for the ASembleNet building blocks: timm and torchvision ConvNeXt blocks, ViT encoder blocks
and Squeeze-and-Excitation modules, each with random weights, in eval mode.

Each fixture tests/golden/blocks_<block>_<library>.npz holds
    "input"          the input, in our layout (NHWC images, (B, N, D) tokens)
    "output"         the reference output, converted to the same layout
    "param/<path>"   the reference weights ported into our module's parameter layout ("/"-joined nnx path)
    "config/<name>"  the constructor arguments of our module ("config/module" names it)
so that tests/test_golden_blocks.py needs neither torch nor this file. Weights that start as constants (LayerNorm
affine, ConvNeXt layer scale at 1e-6, which would hide the whole residual branch) are randomised too.
"""
from __future__ import annotations

import functools
import pathlib

import numpy as np
import timm.layers
import timm.models.convnext
import timm.models.vision_transformer
import torch
import torchvision.models.convnext
import torchvision.models.vision_transformer
import torchvision.ops

CONVNEXT_CHANNELS = 32
VIT_DIM, VIT_HEADS, VIT_TOKENS = 48, 4, 17
SE_CHANNELS, SE_SQUEEZE = 32, 8
BATCH, HEIGHT, WIDTH = 2, 11, 9  # non-square, odd sizes so that a transposed or mis-padded port cannot pass


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).numpy().copy()


def _dense(weight: torch.Tensor) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax kernel (in, out)."""
    return _numpy(weight).T


def _pointwise(weight: torch.Tensor) -> np.ndarray:
    """torch 1x1 Conv2d weight (out, in, 1, 1) -> Flax Linear kernel (in, out)."""
    return _numpy(weight)[:, :, 0, 0].T


def _conv(weight: torch.Tensor) -> np.ndarray:
    """torch Conv2d weight OIHW -> Flax HWIO. For a depthwise conv, torch's (C, 1, kh, kw) becomes (kh, kw, 1, C),
    the layout of an nnx.Conv with feature_group_count=C."""
    return _numpy(weight).transpose(2, 3, 1, 0)


def _layer_norm(prefix: str, norm: torch.nn.LayerNorm) -> dict[str, np.ndarray]:
    return {f"{prefix}/scale": _numpy(norm.weight), f"{prefix}/bias": _numpy(norm.bias)}


def _linear(prefix: str, linear: torch.nn.Linear) -> dict[str, np.ndarray]:
    return {f"{prefix}/kernel": _dense(linear.weight), f"{prefix}/bias": _numpy(linear.bias)}


def _randomise_constants(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give LayerNorm affines and layer scales random values: at their initial constants a port that swapped
    scale and bias, or dropped the layer scale, would still match."""
    with torch.no_grad():
        for submodule in module.modules():
            if isinstance(submodule, torch.nn.LayerNorm):
                submodule.weight.copy_(1.0 + 0.5 * torch.randn(submodule.weight.shape, generator=generator))
                submodule.bias.copy_(0.3 * torch.randn(submodule.bias.shape, generator=generator))
        for name, parameter in module.named_parameters():
            if name in ("gamma", "layer_scale"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))


def _images(generator: torch.Generator, channels: int) -> torch.Tensor:
    # A non-zero mean makes LayerNorm's variance formula matter (one-pass variance loses digits here).
    return 0.5 + torch.randn(BATCH, channels, HEIGHT, WIDTH, generator=generator)


def _tokens(generator: torch.Generator) -> torch.Tensor:
    return 0.5 + torch.randn(BATCH, VIT_TOKENS, VIT_DIM, generator=generator)


def _to_nhwc(tensor: torch.Tensor) -> np.ndarray:
    return _numpy(tensor).transpose(0, 2, 3, 1)


def _port_convnext_timm(block: timm.models.convnext.ConvNeXtBlock) -> dict[str, np.ndarray]:
    return {"depthwise/kernel": _conv(block.conv_dw.weight), "depthwise/bias": _numpy(block.conv_dw.bias),
            **_layer_norm("norm", block.norm), **_linear("expand", block.mlp.fc1),
            **_linear("project", block.mlp.fc2), "layer_scale/gamma": _numpy(block.gamma)}


def _port_convnext_torchvision(block: torchvision.models.convnext.CNBlock) -> dict[str, np.ndarray]:
    depthwise, _, norm, expand, _, project, _ = block.block
    return {"depthwise/kernel": _conv(depthwise.weight), "depthwise/bias": _numpy(depthwise.bias),
            **_layer_norm("norm", norm), **_linear("expand", expand), **_linear("project", project),
            "layer_scale/gamma": _numpy(block.layer_scale).reshape(-1)}


def _port_vit_timm(block: timm.models.vision_transformer.Block) -> dict[str, np.ndarray]:
    # timm's fused qkv rows are [q | k | v], each split into contiguous heads: the layout SelfAttention reshapes.
    return {**_layer_norm("attention_norm", block.norm1), **_linear("attention/qkv", block.attn.qkv),
            **_linear("attention/projection", block.attn.proj), **_layer_norm("mlp_norm", block.norm2),
            **_linear("mlp_expand", block.mlp.fc1), **_linear("mlp_project", block.mlp.fc2)}


def _port_vit_torchvision(block: torchvision.models.vision_transformer.EncoderBlock) -> dict[str, np.ndarray]:
    attention = block.self_attention
    # nn.MultiheadAttention keeps q, k, v stacked in in_proj_weight (3D, D) in the same [q | k | v] order.
    return {**_layer_norm("attention_norm", block.ln_1),
            "attention/qkv/kernel": _dense(attention.in_proj_weight),
            "attention/qkv/bias": _numpy(attention.in_proj_bias),
            **_linear("attention/projection", attention.out_proj), **_layer_norm("mlp_norm", block.ln_2),
            **_linear("mlp_expand", block.mlp[0]), **_linear("mlp_project", block.mlp[3])}


def _port_se(reduce: torch.nn.Conv2d, expand: torch.nn.Conv2d) -> dict[str, np.ndarray]:
    return {"reduce/kernel": _pointwise(reduce.weight), "reduce/bias": _numpy(reduce.bias),
            "expand/kernel": _pointwise(expand.weight), "expand/bias": _numpy(expand.bias)}


def _fixtures(generator: torch.Generator):
    """(name, our module's config, reference module, its weights ported to our layout, input in torch layout)."""
    convnext = {"module": "ConvNeXtBlock", "channels": CONVNEXT_CHANNELS}
    block = timm.models.convnext.ConvNeXtBlock(CONVNEXT_CHANNELS, ls_init_value=1e-6)
    _randomise_constants(block, generator)
    yield "convnext_timm", convnext, block, _port_convnext_timm(block), _images(generator, CONVNEXT_CHANNELS)
    block = torchvision.models.convnext.CNBlock(CONVNEXT_CHANNELS, layer_scale=1e-6, stochastic_depth_prob=0.0)
    _randomise_constants(block, generator)
    yield ("convnext_torchvision", convnext, block, _port_convnext_torchvision(block),
           _images(generator, CONVNEXT_CHANNELS))

    vit = {"module": "EncoderBlock", "dim": VIT_DIM, "num_heads": VIT_HEADS}
    block = timm.models.vision_transformer.Block(
        VIT_DIM, VIT_HEADS, mlp_ratio=4.0, qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
    _randomise_constants(block, generator)
    yield "vit_timm", vit, block, _port_vit_timm(block), _tokens(generator)
    block = torchvision.models.vision_transformer.EncoderBlock(
        VIT_HEADS, VIT_DIM, 4 * VIT_DIM, dropout=0.0, attention_dropout=0.0)
    _randomise_constants(block, generator)
    yield "vit_torchvision", vit, block, _port_vit_torchvision(block), _tokens(generator)

    se = {"module": "SqueezeExcitation", "channels": SE_CHANNELS, "squeeze_channels": SE_SQUEEZE}
    block = timm.layers.SqueezeExcite(SE_CHANNELS, rd_channels=SE_SQUEEZE)
    yield "se_timm", se, block, _port_se(block.fc1, block.fc2), _images(generator, SE_CHANNELS)
    block = torchvision.ops.SqueezeExcitation(SE_CHANNELS, SE_SQUEEZE)
    yield "se_torchvision", se, block, _port_se(block.fc1, block.fc2), _images(generator, SE_CHANNELS)


def _our_layout(tensor: torch.Tensor) -> np.ndarray:
    return _to_nhwc(tensor) if tensor.ndim == 4 else _numpy(tensor)


def make(seed: int, out: pathlib.Path) -> list[pathlib.Path]:
    torch.manual_seed(seed)  # the modules' own initialisers draw from the global generator
    generator = torch.Generator().manual_seed(seed)
    written = []
    for name, config, block, ported, inputs in _fixtures(generator):
        block.eval()
        with torch.no_grad():
            output = block(inputs)
        arrays = {"input": _our_layout(inputs), "output": _our_layout(output),
                  **{f"param/{path}": value for path, value in ported.items()},
                  **{f"config/{key}": np.asarray(value) for key, value in config.items()}}
        path = out / f"blocks_{name}.npz"
        temporary = path.with_suffix(".tmp.npz")
        np.savez_compressed(temporary, **arrays)
        temporary.replace(path)
        written.append(path)
    return written
