"""Squeeze-and-Excitation, layer scale and stochastic depth, checked against NumPy re-derivations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asemble_jax.models.layers import (
    LayerScale,
    SqueezeExcitation,
    StochasticDepth,
    squeeze_channels_for,
    transformer_layer_norm,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_excitation(module: SqueezeExcitation, x: np.ndarray) -> np.ndarray:
    squeezed = x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1)
    hidden = np.maximum(squeezed @ np.asarray(module.reduce.kernel[...]) + np.asarray(module.reduce.bias[...]), 0)
    gate = _sigmoid(hidden @ np.asarray(module.expand.kernel[...]) + np.asarray(module.expand.bias[...]))
    return x * gate.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],))


def test_squeeze_excitation_gates_each_channel_of_a_feature_map():
    module = SqueezeExcitation(12, 4, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(3, 5, 7, 12)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(np.asarray(module(x)), _numpy_excitation(module, x), rtol=1e-5, atol=1e-6)


def test_squeeze_excitation_gates_a_vector_without_averaging_it():
    module = SqueezeExcitation(10, 4, rngs=nnx.Rngs(1))
    x = np.random.default_rng(1).normal(size=(4, 10)).astype(np.float32)
    gate = np.asarray(module.gate(x))
    assert gate.shape == (4, 10)
    assert np.all((gate > 0) & (gate < 1))
    # Each sample is gated by its own vector: changing one sample leaves the others' outputs alone.
    changed = x.copy()
    changed[0] += 3.0
    np.testing.assert_array_equal(np.asarray(module(changed))[1:], np.asarray(module(x))[1:])
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(np.asarray(module(x)), _numpy_excitation(module, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("channels", "reduction", "expected"), [(256, 16, 16), (64, 16, 4), (16, 16, 4), (96, 4, 24)])
def test_squeeze_width_is_channels_over_reduction_with_a_floor(channels, reduction, expected):
    assert squeeze_channels_for(channels, reduction) == expected
    assert SqueezeExcitation(channels, rngs=nnx.Rngs(0)).reduce.kernel.shape == (channels,
                                                                                  squeeze_channels_for(channels))


def test_layer_scale_multiplies_each_channel_and_starts_at_its_init_value():
    module = LayerScale(3, 1e-6)
    np.testing.assert_array_equal(np.asarray(module.gamma[...]), np.full(3, 1e-6, np.float32))
    module.gamma[...] = jnp.array([1.0, -2.0, 0.5])
    x = np.ones((2, 4, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(module(x)), x * np.array([1.0, -2.0, 0.5], np.float32))


def test_transformer_layer_norm_uses_epsilon_1e6():
    norm = transformer_layer_norm(4, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    # A nearly constant input: the output depends visibly on epsilon (variance 1e-6 is as large as eps).
    x = np.array([[0.0, 0.002, 0.0, -0.002]], np.float32)
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-6)
    np.testing.assert_allclose(np.asarray(norm(x)), expected, rtol=1e-5)


def test_stochastic_depth_is_the_identity_in_evaluation_and_at_rate_zero():
    x = jnp.arange(24.0).reshape(4, 2, 3)
    np.testing.assert_array_equal(StochasticDepth(0.7, rngs=nnx.Rngs(0))(x, deterministic=True), x)
    np.testing.assert_array_equal(StochasticDepth(0.0, rngs=nnx.Rngs(0))(x, deterministic=False), x)


def test_stochastic_depth_drops_whole_samples_and_rescales_the_survivors():
    rate = 0.25
    module = StochasticDepth(rate, rngs=nnx.Rngs(dropout=3))
    x = jnp.ones((4000, 3, 2, 5))
    y = np.asarray(module(x, deterministic=False))
    per_sample = y.reshape(len(y), -1)
    dropped = np.all(per_sample == 0, axis=1)
    kept = np.all(per_sample == 1 / (1 - rate), axis=1)
    assert np.all(dropped | kept), "every sample is either dropped whole or kept whole"
    # 4000 Bernoulli(0.25) draws: the share dropped is within 0.25 +- 0.03 (about 4.4 standard deviations).
    assert abs(dropped.mean() - rate) < 0.03
    # Rescaling keeps the expectation: the mean over samples stays close to 1.
    assert abs(y.mean() - 1.0) < 0.06
    # The key stream advances: a second call draws a different pattern.
    assert not np.array_equal(np.asarray(module(x, deterministic=False)), y)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_stochastic_depth_refuses_rates_outside_0_1(rate):
    with pytest.raises(ValueError, match="stochastic depth rate"):
        StochasticDepth(rate, rngs=nnx.Rngs(0))
