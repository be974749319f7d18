"""Models by name, preset and overrides, the one way configs and scripts build a model.

A model module registers its class with `@register("name")`; the class defines `PRESETS`, a mapping from preset
name ("tiny", "small", "paper", ...) to constructor keyword arguments, and a keyword-only constructor that takes
at least num_classes, in_channels and rngs. Every module of asemble_jax.models is imported on the first lookup,
so a new model module needs no edit here.

    model = create_model("asemblenet", "tiny", rngs=nnx.Rngs(0), use_vit=False)
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from asemble_jax.models import cpu_convolution

_MODELS: dict[str, type] = {}
_discovered = False

# The ASembleNet ablation grid: variant name -> overrides of the asemblenet constructor.
ABLATION_VARIANTS: Mapping[str, Mapping[str, bool]] = {
    "full": {},
    "no_se": {"use_se": False},
    "no_wide_resnet": {"use_wide_resnet": False},
    "no_convnext": {"use_convnext": False},
    "no_vit": {"use_vit": False},
    "wide_resnet_only": {"use_convnext": False, "use_vit": False},
    "convnext_only": {"use_wide_resnet": False, "use_vit": False},
    "vit_only": {"use_wide_resnet": False, "use_convnext": False},
}
# The full factorial of the four switches (issue 14): every combination of the three branches that keeps at least
# one, each with and without SE, 7 x 2 = 14 variants. The eight combinations the leave-one-out grid already has
# keep its names (so both grids share those cells); the six others are named after their SE-on twin + "_no_se".
COMPONENTS = ("use_wide_resnet", "use_convnext", "use_vit", "use_se")


def _factorial_variants() -> dict[str, dict[str, bool]]:
    def switches(overrides: Mapping[str, bool]) -> tuple[bool, ...]:
        return tuple(overrides.get(name, True) for name in COMPONENTS)

    named = {switches(overrides): name for name, overrides in ABLATION_VARIANTS.items()}
    variants = {}
    for use_se in (True, False):
        for name, overrides in ABLATION_VARIANTS.items():
            if "use_se" in overrides:
                continue
            key = switches({**overrides, "use_se": use_se})
            variants[named.get(key, f"{name}_no_se")] = {c: v for c, v in zip(COMPONENTS, key) if not v}
    return variants


FACTORIAL_VARIANTS: Mapping[str, Mapping[str, bool]] = _factorial_variants()
# Passed by create_model itself, so never accepted as overrides.
_CREATE_ARGUMENTS = ("rngs", "num_classes", "in_channels")


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a model under `name`; the class must define a non-empty PRESETS mapping."""

    def add(model_class: type) -> type:
        presets = getattr(model_class, "PRESETS", None)
        if not isinstance(presets, Mapping) or not presets:
            raise TypeError(f"model {name!r} ({model_class.__qualname__}) must define PRESETS, a non-empty mapping "
                            f"from preset name to constructor arguments")
        registered = _MODELS.get(name)
        if registered is not None and registered.__qualname__ != model_class.__qualname__:
            raise ValueError(f"model name {name!r} is already registered by {registered.__module__}."
                             f"{registered.__qualname__}")
        _MODELS[name] = model_class
        return model_class

    return add


def _discover_models() -> None:
    global _discovered
    if not _discovered:
        package = importlib.import_module(__package__)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{__package__}.{module.name}")
        _discovered = True


def available_models() -> tuple[str, ...]:
    _discover_models()
    return tuple(sorted(_MODELS))


def model_class(name: str) -> type:
    """The registered class for `name`; ValueError listing the valid names otherwise."""
    _discover_models()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def presets(name: str) -> tuple[str, ...]:
    return tuple(model_class(name).PRESETS)


def constructor_arguments(name: str) -> tuple[str, ...]:
    """The architecture fields that create_model accepts as overrides for `name`."""
    parameters = inspect.signature(model_class(name).__init__).parameters.values()
    return tuple(p.name for p in parameters
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CREATE_ARGUMENTS)


def model_arguments(name: str, preset: str = "small", *, num_classes: int = 2, in_channels: int = 1,
                    **overrides) -> dict:
    """Every keyword argument but rngs that create_model(name, preset, ...) passes to the model's constructor,
    the constructor's own defaults filled in: the complete architecture, e.g. to record with a run."""
    cls = model_class(name)
    if preset not in cls.PRESETS:
        raise ValueError(f"unknown preset {preset!r} for model {name!r}; valid presets: {', '.join(cls.PRESETS)}")
    valid = constructor_arguments(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)} for model {name!r}; valid overrides: "
                         f"{', '.join(valid)}")
    parameters = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in parameters
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}
    return {**defaults, **cls.PRESETS[preset], **overrides, "num_classes": num_classes, "in_channels": in_channels}


def create_model(name: str, preset: str = "small", *, rngs: nnx.Rngs, num_classes: int = 2, in_channels: int = 1,
                 **overrides) -> nnx.Module:
    """Build model `name` with the arguments of `preset`, then `overrides` on top (e.g. use_vit=False,
    dtype=jnp.bfloat16). Unknown names, presets or override names raise ValueError listing the valid ones;
    impossible combinations raise the model's own ValueError."""
    arguments = model_arguments(name, preset, num_classes=num_classes, in_channels=in_channels, **overrides)
    return model_class(name)(rngs=rngs, **arguments)


def ablation_variants() -> Mapping[str, Mapping[str, bool]]:
    """The ASembleNet ablation grid (full model, each part removed, each branch alone) as asemblenet overrides."""
    return ABLATION_VARIANTS


def factorial_variants() -> Mapping[str, Mapping[str, bool]]:
    """The 14 ASembleNet variants of the full factorial of COMPONENTS (at least one branch), as overrides."""
    return FACTORIAL_VARIANTS


def variant_overrides(variant: str) -> Mapping[str, bool] | None:
    """The asemblenet overrides of any named variant (leave-one-out or factorial); None for an unknown name."""
    return ABLATION_VARIANTS.get(variant, FACTORIAL_VARIANTS.get(variant))


def forward_gflops(model: nnx.Module, size: int, in_channels: int = 1) -> float:
    """GFLOPs of one size x size image through `model` in evaluation mode, float32, from XLA's cost analysis of
    the compiled program (a multiply-add counts as 2), with every convolution traced as lax's (the count is the
    model's, not the CPU's depthwise lowering's). Works on abstract models from nnx.eval_shape."""
    graphdef, state = nnx.split(model)

    def forward(state, images):
        return nnx.merge(graphdef, state)(images, train=False)[0]

    images = jax.ShapeDtypeStruct((1, size, size, in_channels), jnp.float32)
    with cpu_convolution.lax_convolutions():
        lowered = jax.jit(forward).lower(state, images)
    analysis = lowered.compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
        analysis = analysis[0]
    return analysis["flops"] / 1e9


def count_parameters(model: nnx.Module, *, include_batch_stats: bool = True) -> int:
    """Number of scalars in the model's parameters, plus its BatchNorm running statistics unless told not to
    (Keras counts those in a model's total, so that is the figure comparable with the Keras applications).
    Works on abstract models from nnx.eval_shape too."""
    kinds = (nnx.Param, nnx.BatchStat) if include_batch_stats else (nnx.Param,)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, *kinds)))
