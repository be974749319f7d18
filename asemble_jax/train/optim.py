"""The optimiser: AdamW with linear warmup and cosine decay, global-norm clipping, and weight decay only on
weight matrices and kernels (never on norms, biases, class tokens or position embeddings)."""
from __future__ import annotations

from typing import Any

import jax
import optax

NO_DECAY_NAMES = ("bias", "scale", "cls_token", "class_token", "pos_embed", "position_embedding", "embedding",
                  "gamma", "layer_scale")


def _path_names(path) -> list[str]:
    return [str(getattr(key, "key", getattr(key, "name", key))) for key in path]


def weight_decay_mask(params: Any) -> Any:
    """True where a parameter decays: kernels of rank >= 2 whose name is not a norm, bias or embedding."""

    def decays(path, leaf) -> bool:
        names = " ".join(_path_names(path)).lower()
        return leaf.ndim >= 2 and not any(name in names for name in NO_DECAY_NAMES)

    return jax.tree_util.tree_map_with_path(decays, params)


def learning_rate_schedule(config) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
        decay_steps=max(config.total_steps, config.warmup_steps + 1),
        end_value=config.learning_rate * config.final_learning_rate_fraction)


def make_optimizer(config, params: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(config)
    tx = optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, weight_decay=config.weight_decay,
                    mask=weight_decay_mask(params)),
    )
    return tx, schedule
