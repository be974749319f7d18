"""Flax NNX classifiers: ASembleNet (wide ResNet + ConvNeXt + ViT + Squeeze-Excitation) and the baselines,
built by name through the registry. Every model is called as `model(images, train=...) -> (logits, aux)`."""
from asemble_jax.models.registry import (
    ablation_variants,
    available_models,
    count_parameters,
    create_model,
    model_arguments,
    presets,
    register,
)

__all__ = ["ablation_variants", "available_models", "count_parameters", "create_model", "model_arguments", "presets", "register"]
