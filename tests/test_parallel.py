"""One per-device step, three ways to run it: 1 device, 8 devices under shard_map, 8 devices under pmap."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from asemble_jax import parallel
from asemble_jax.train import step as step_lib


class ConvBnNet(nnx.Module):
    """Small CNN with BatchNorm and dropout: the two things that break naive data parallelism."""

    def __init__(self, *, dropout: float, rngs: nnx.Rngs):
        # No bias before BatchNorm: its gradient is exactly zero, and Adam would amplify rounding noise in it.
        self.conv = nnx.Conv(1, 8, (3, 3), use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x, *, train: bool = False):
        h = nnx.relu(self.norm(self.conv(x), use_running_average=not train))
        h = self.drop(h.mean(axis=(1, 2)), deterministic=not train)
        return self.head(h), {"features": {"conv": h}}


def _batches(n_steps, batch_size=16, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        labels = rng.integers(0, 2, batch_size).astype(np.int32)
        images = rng.normal(size=(batch_size, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
        yield {"image": images, "label": labels}


def _train(dp: parallel.DataParallel, n_steps=4, dropout=0.0):
    model = parallel.synchronise_batch_norm(ConvBnNet(dropout=dropout, rngs=nnx.Rngs(params=0, dropout=1)))
    tx = optax.adamw(1e-2)
    graphdef, state = step_lib.create_train_state(model, tx, seed=0, ema=True)
    state = dp.put_state(state)
    train_step = dp.train_step(step_lib.make_train_step(graphdef, tx, label_smoothing=0.1, ema_decay=0.9))
    losses = []
    for batch in _batches(n_steps):
        state, metrics = train_step(state, dp.put_batch(batch))
        losses.append(float(metrics["loss"]))
    return np.array(losses), jax.device_get(dp.get_state(state))


@pytest.fixture(scope="module")
def single_device_run():
    return _train(parallel.DataParallel("shard_map", devices=jax.devices()[:1]))


@pytest.mark.parametrize("mode", parallel.MODES)
def test_eight_devices_match_one_device(single_device_run, mode):
    assert jax.device_count() == 8, "conftest.py must request 8 simulated devices before JAX starts"
    losses_1, state_1 = single_device_run
    losses_8, state_8 = _train(parallel.DataParallel(mode))
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5, atol=1e-6)
    for name in ("params", "batch_stats", "ema_params"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     getattr(state_8, name), getattr(state_1, name))
    assert losses_1[-1] < losses_1[0], "the toy problem must be learnable, or the comparison proves little"


def test_dropout_keys_differ_between_devices_and_steps():
    dp = parallel.DataParallel("shard_map")
    rng = jax.random.key_data(jax.random.key(0))

    def keys_at(step):
        draw = dp.predict(lambda state, batch: jax.random.key_data(
            step_lib.dropout_key(state, jnp.int32(step)))[None].repeat(batch["x"].shape[0], 0))
        return dp.get_outputs(draw(dp.put_state(rng), dp.put_batch({"x": np.zeros(8, np.float32)})))

    step_3, step_4 = keys_at(3), keys_at(4)
    assert len({tuple(k) for k in step_3}) == 8, "each of the 8 devices needs its own dropout key"
    assert not {tuple(k) for k in step_3} & {tuple(k) for k in step_4}, "keys must change from step to step"
    np.testing.assert_array_equal(keys_at(3), step_3)  # and be a function of (seed, step, device) only


def test_training_with_dropout_on_eight_devices_keeps_finite_losses():
    losses, _ = _train(parallel.DataParallel("shard_map"), n_steps=6, dropout=0.5)
    assert np.all(np.isfinite(losses))


def test_predict_returns_every_example_in_order():
    dp = parallel.DataParallel("shard_map")
    predict = dp.predict(lambda state, batch: batch["x"] * state)
    x = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(dp.get_outputs(predict(dp.put_state(jnp.float32(2.0)), dp.put_batch({"x": x}))),
                                  2 * x)


def test_batch_not_divisible_by_devices_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        parallel.DataParallel("shard_map").check_batch_size(12)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="shard_map"):
        parallel.DataParallel("threads")
