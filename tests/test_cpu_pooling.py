"""cpu_pooling.max_pool against nnx.max_pool: the same forward pass bit for bit, and autodiff's gradient (the
first maximum of a window takes it on ties), with no select-and-scatter left in the compiled gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from asemble_jax.models import cpu_pooling, registry

CASES = [  # (input shape, window, strides, padding): the models' pools, then odd sizes and other windows
    ((2, 18, 18, 3), (3, 3), (2, 2), "VALID"),  # ResNet50 and InceptionV3 (after explicit zero padding)
    ((2, 17, 17, 3), (3, 3), (2, 2), "SAME"),  # Xception
    ((2, 16, 16, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # the wide ResNet's stem
    ((1, 11, 9, 2), (2, 3), (3, 2), ((0, 2), (1, 0))),
    ((1, 7, 8, 2), (3, 3), (1, 1), "SAME"),
]


def _rectified(shape, seed=0):
    """ReLU outputs, with a block of zeros, so that windows hold ties as they do after a stem's ReLU."""
    x = np.maximum(np.random.default_rng(seed).normal(size=shape), 0.0)
    x[:, : shape[1] // 3] = 0.0
    return jnp.asarray(x, jnp.float32)


def _gradient(pool, x, cotangent, *args):
    return jax.jit(jax.grad(lambda x: (pool(x, *args) * cotangent).sum()))(x)


@pytest.mark.parametrize("shape,window,strides,padding", CASES)
def test_values_and_gradient_equal_nnx_max_pool(shape, window, strides, padding):
    x = _rectified(shape)
    expected = nnx.max_pool(x, window, strides=strides, padding=padding)
    np.testing.assert_array_equal(cpu_pooling.max_pool(x, window, strides=strides, padding=padding), expected)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=expected.shape), jnp.float32)
    ours = _gradient(cpu_pooling.max_pool, x, cotangent, window, strides, padding)
    reference = _gradient(nnx.max_pool, x, cotangent, window, strides, padding)
    # One routing on ties: a wrong choice moves a whole cotangent (order 1); summation order moves the last bit.
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(ours).sum()) > 0


def test_the_compiled_gradient_has_no_select_and_scatter():
    x = _rectified((2, 18, 18, 3))
    text = jax.jit(jax.grad(lambda x: cpu_pooling.max_pool(x, (3, 3), (2, 2)).sum())).lower(x).as_text()
    assert "select_and_scatter" not in text and "reduce_window" in text
    reference = jax.jit(jax.grad(lambda x: nnx.max_pool(x, (3, 3), (2, 2)).sum())).lower(x).as_text()
    assert "select_and_scatter" in reference  # what the rewrite removes


def test_gradient_matches_finite_differences():
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        # Distinct values (no ties), where the max is differentiable.
        x = jnp.asarray(np.random.default_rng(2).permutation(2 * 9 * 9 * 2).reshape(2, 9, 9, 2) * 0.1, jnp.float64)
        check_grads(lambda x: cpu_pooling.max_pool(x, (3, 3), (2, 2), "SAME") ** 2, (x,), order=1, modes=["rev"])


def test_bfloat16_maps_keep_their_dtype_and_values():
    x = _rectified((2, 18, 18, 3)).astype(jnp.bfloat16)
    y = cpu_pooling.max_pool(x, (3, 3), (2, 2))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, nnx.max_pool(x, (3, 3), (2, 2)))
    cotangent = jnp.ones(y.shape, jnp.bfloat16)
    np.testing.assert_array_equal(_gradient(cpu_pooling.max_pool, x, cotangent, (3, 3), (2, 2)),
                                  _gradient(nnx.max_pool, x, cotangent, (3, 3), (2, 2)))


def test_other_layouts_are_refused_in_one_line():
    with pytest.raises(ValueError, match="NHWC"):
        cpu_pooling.max_pool(jnp.zeros((2, 8, 8)), (3, 3))


@pytest.mark.parametrize("name", ["resnet50", "inception_v3", "xception", "asemblenet"])
def test_the_models_pool_without_select_and_scatter(name):
    model = registry.create_model(name, "tiny" if "tiny" in registry.presets(name) else "small", rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    size = 75 if name in ("inception_v3", "xception") else 64

    def loss(params, x):
        logits, _ = nnx.merge(graphdef, params, rest, copy=True)(x, train=True)
        return logits.sum()

    text = jax.jit(jax.grad(loss)).lower(params, jnp.zeros((2, size, size, 1))).as_text()
    assert "reduce_window" in text and "select_and_scatter" not in text
