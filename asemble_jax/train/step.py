"""The per-device training step over a functional view of an NNX model (prediction: asemble_jax/workdir.py).

The model is split once into a static graph and three kinds of state: parameters (optimised), BatchNorm
statistics (updated by the forward pass) and everything else (RNG streams, re-seeded every step from the step
number and the device index, so that resuming and changing device count never replays or shares dropout masks).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from asemble_jax.parallel import AXIS
from asemble_jax.workdir import Weights, split_model


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    other: Any  # RNG streams and any other non-trained variables, carried unchanged
    opt_state: Any
    ema_params: Any  # None when no exponential moving average is kept
    rng: jax.Array

    def weights(self, *, use_ema: bool) -> Weights:
        """What prediction needs: the EMA parameters when asked for and kept, else the trained ones."""
        params = self.ema_params if use_ema and self.ema_params is not None else self.params
        return Weights(params, self.batch_stats, self.other)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation, *, seed: int, ema: bool):
    graphdef, params, batch_stats, other = split_model(model)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, other=other,
                       opt_state=tx.init(params), ema_params=jax.tree.map(jnp.copy, params) if ema else None,
                       rng=jax.random.key_data(jax.random.key(seed)))
    return graphdef, state


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def dropout_key(rng_data: jax.Array, step: jax.Array) -> jax.Array:
    """The dropout key of this device at this step (call inside a function mapped over AXIS): a new key every
    step, so a resumed run never replays masks, and a different key on every device, so that shards of one batch
    never share masks."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(rng_data), step),
                              jax.lax.axis_index(AXIS))


def make_train_step(graphdef, tx: optax.GradientTransformation, *, label_smoothing: float, ema_decay: float):
    """Per-device step(state, batch) -> (state, metrics); gradients and metrics are averaged over AXIS."""

    def step(state: TrainState, batch: dict[str, jax.Array]):
        device_key = dropout_key(state.rng, state.step)

        def loss_fn(params):
            # copy=True: fresh variables at this trace level, which the forward pass may then update.
            model = nnx.merge(graphdef, params, state.batch_stats, state.other, copy=True)
            nnx.reseed(model, dropout=device_key)
            logits, _ = model(batch["image"], train=True)
            loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
            return loss, (logits, nnx.state(model, nnx.BatchStat))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        # Local means of equal-sized shards: their mean is the global-batch mean.
        grads = jax.lax.pmean(grads, AXIS)
        # BatchNorm is synchronised over AXIS, so these are equal already; the mean makes it provable to shard_map.
        batch_stats = jax.lax.pmean(batch_stats, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if ema_params is not None:
            ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
            "grad_norm": optax.tree.norm(grads),
        }
        metrics = jax.lax.pmean(metrics, AXIS)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state, ema_params=ema_params)
        return new_state, metrics

    return step
