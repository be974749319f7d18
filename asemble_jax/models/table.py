"""The model table (results/models/table.md, scripts/model_table.py): every ASembleNet preset and ablation variant,
and the baselines, with parameter counts, forward FLOPs at one input size and the modules each one contains.

FLOPs come from XLA's own cost analysis of the compiled forward pass (jax.jit(...).lower(...).compile()
.cost_analysis()["flops"]) for one image in evaluation mode, float32, on the machine's default backend; XLA
counts a multiply-add as two operations. Models are built abstractly (nnx.eval_shape): nothing is allocated.
"""
from __future__ import annotations

import sys

import jax
from flax import nnx

from asemble_jax.models.registry import (ablation_variants, available_models, count_parameters, create_model,
                                         forward_gflops, model_arguments)

HYBRID = "asemblenet"
HYBRID_PRESETS = ("tiny", "small", "paper")


def abstract_model(name: str, preset: str, **overrides) -> nnx.Module:
    return nnx.eval_shape(lambda: create_model(name, preset, rngs=nnx.Rngs(0), **overrides))


def describe_hybrid(arguments: dict) -> str:
    se = " + SE" if arguments["use_se"] else ""
    parts = []
    if arguments["use_wide_resnet"]:
        parts.append(f"W: WRN-{arguments['wrn_depth']}-{arguments['wrn_widen_factor']}{se}")
    if arguments["use_convnext"]:
        dims = "/".join(map(str, arguments["convnext_dims"]))
        depths = "/".join(map(str, arguments["convnext_depths"]))
        parts.append(f"C: ConvNeXt dims {dims}, depths {depths}{se}")
    if arguments["use_vit"]:
        parts.append(f"V: ViT d{arguments['vit_dim']} x{arguments['vit_depth']} blocks, {arguments['vit_num_heads']} "
                     f"heads, patch {arguments['vit_patch_size']}")
    parts.append("SE fusion gate" if arguments["use_se"] else "plain concat")
    return "; ".join(parts)


def hybrid_rows(size: int):
    for preset in HYBRID_PRESETS:
        native = model_arguments(HYBRID, preset)["image_size"]
        for variant, overrides in ablation_variants().items():
            at_native = count_parameters(abstract_model(HYBRID, preset, **overrides))
            model = abstract_model(HYBRID, preset, **{**overrides, "image_size": size})
            arguments = model_arguments(HYBRID, preset, **overrides)
            print(f"{HYBRID} {preset} {variant}", file=sys.stderr, flush=True)
            yield (f"{HYBRID} `{preset}`", variant, native, at_native, count_parameters(model),
                   count_parameters(model, include_batch_stats=False), forward_gflops(model, size),
                   describe_hybrid(arguments))


def baseline_rows(size: int):
    for name in available_models():
        if name == HYBRID:
            continue
        model = abstract_model(name, "paper")
        total = count_parameters(model)
        print(name, file=sys.stderr, flush=True)
        yield (name, "-", "any", total, total, count_parameters(model, include_batch_stats=False),
               forward_gflops(model, size), f"{type(model).__name__} (Keras applications layout)")


def render(rows, size: int) -> str:
    lines = [
        "# Model table",
        "",
        f"Parameter counts include BatchNorm running statistics (the Keras convention) unless marked trainable. "
        f"GFLOPs: forward pass of one {size}x{size}x1 image, evaluation mode, float32, from XLA's cost analysis "
        f"of the compiled program (jax.jit(...).lower(...).compile().cost_analysis(); a multiply-add counts as 2), "
        f"backend `{jax.default_backend()}`. ASembleNet presets other than `paper` are meant for smaller inputs "
        f"(column 'native input'); at {size}x{size} their ViT position embedding grows, hence two counts. "
        f"Regenerate with `python scripts/model_table.py`.",
        "",
        f"| model | variant | native input | params (native input) | params at {size} | trainable at {size} "
        f"| GFLOPs at {size} | modules |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for model, variant, native, at_native, total, trainable, gflops, modules in rows:
        lines.append(f"| {model} | {variant} | {native} | {at_native:,} | {total:,} | {trainable:,} | {gflops:.3f} "
                     f"| {modules} |")
    return "\n".join(lines) + "\n"


def model_table(size: int = 256) -> str:
    """The whole table at input size `size`, as Markdown; one progress line per model on stderr."""
    return render([*hybrid_rows(size), *baseline_rows(size)], size)
