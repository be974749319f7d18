"""The CPU's shifted-sum depthwise convolution equals lax's grouped convolution: values, input and weight
gradients, for the padding forms the models use and some they do not, and it is what the models now run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.test_util import check_grads

from asemble_jax.models import depthwise_conv
from asemble_jax.models.baseline_blocks import SeparableConv
from asemble_jax.models.convnext import ConvNeXtBlock


def _lax_depthwise(x, kernel, padding):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1])


def _inputs(shape, kernel_hw, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(*kernel_hw, 1, shape[-1])), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
    return x, kernel, cotangent


CASES = [  # (input shape, kernel, padding): ConvNeXt's, Xception's, then ones the models do not use
    ((2, 9, 9, 6), (7, 7), ((3, 3), (3, 3))),
    ((2, 8, 8, 5), (3, 3), "SAME"),
    ((1, 6, 7, 4), (4, 2), "SAME"),  # even kernel: SAME pads one more after than before
    ((2, 7, 6, 3), (3, 3), "VALID"),
    ((1, 5, 5, 2), (3, 5), ((2, 0), (1, 3))),  # asymmetric, wider than the kernel needs
]


@pytest.mark.parametrize("shape,kernel_hw,padding", CASES)
def test_values_and_both_gradients_equal_lax(shape, kernel_hw, padding):
    x, kernel, _ = _inputs(shape, kernel_hw)
    expected = _lax_depthwise(x, kernel, padding)
    actual = jax.jit(depthwise_conv.depthwise, static_argnums=2)(x, kernel, padding)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)

    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=expected.shape), jnp.float32)
    expected_grads = jax.vjp(lambda a, b: _lax_depthwise(a, b, padding), x, kernel)[1](cotangent)
    actual_grads = jax.jit(lambda a, b, c: jax.vjp(lambda p, q: depthwise_conv.depthwise(p, q, padding), a, b)[1](c))(
        x, kernel, cotangent)
    for name, got, want in zip(("input", "kernel"), actual_grads, expected_grads):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)


def test_gradient_matches_finite_differences():
    x, kernel, _ = _inputs((1, 5, 5, 2), (3, 3))
    check_grads(lambda a, b: depthwise_conv.depthwise(a, b, "SAME"), (x, kernel),
                              order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


def test_bfloat16_accumulates_in_float32():
    # 49 products summed in bfloat16 would lose about two digits more than the float32-accumulated sum.
    x, kernel, _ = _inputs((2, 9, 9, 8), (7, 7))
    reference = _lax_depthwise(x, kernel, ((3, 3), (3, 3)))
    actual = depthwise_conv.depthwise(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), ((3, 3), (3, 3)))
    assert actual.dtype == jnp.bfloat16
    relative = float(jnp.max(jnp.abs(actual.astype(jnp.float32) - reference)) / jnp.max(jnp.abs(reference)))
    assert relative < 2e-2


def test_anything_but_a_stride_1_depthwise_goes_to_lax_unchanged():
    x, kernel, _ = _inputs((2, 8, 8, 4), (3, 3))
    dims = ("NHWC", "HWIO", "NHWC")
    strided = depthwise_conv.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=dims,
                                                  feature_group_count=4)
    np.testing.assert_array_equal(strided, lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                                                    dimension_numbers=dims, feature_group_count=4))
    dense_kernel = jnp.ones((3, 3, 4, 6), jnp.float32)
    dense = depthwise_conv.conv_general_dilated(x, dense_kernel, (1, 1), "SAME", dimension_numbers=dims)
    np.testing.assert_array_equal(dense, lax.conv_general_dilated(x, dense_kernel, (1, 1), "SAME",
                                                                  dimension_numbers=dims))
    with pytest.raises(ValueError, match="not a stride-1 depthwise"):
        depthwise_conv.depthwise(x, dense_kernel, "SAME")


def test_the_models_depthwise_layers_take_the_shifted_form():
    """ConvNeXt's block and Xception's separable convolution lower without a grouped convolution on the CPU, and
    give lax's numbers."""
    block = ConvNeXtBlock(8, rngs=nnx.Rngs(0))
    separable = SeparableConv(8, 12, rngs=nnx.Rngs(1))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 10, 10, 8)), jnp.float32)
    for layer, padding in ((block.depthwise, ((3, 3), (3, 3))), (separable.depthwise, "SAME")):
        hlo = jax.jit(lambda inputs, layer=layer: layer(inputs)).lower(x).as_text()
        assert "feature_group_count" not in hlo and "convolution" not in hlo
        expected = _lax_depthwise(x, layer.kernel[...], padding) + (layer.bias[...] if layer.bias is not None
                                                                     else 0.0)
        np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_a_models_flop_count_is_that_of_its_convolutions_not_of_the_cpu_lowering():
    """forward_gflops traces convolutions as lax's: a 7x7 depthwise layer (padding 3) on 16x16x8 counts 2 FLOPs per
    multiply-add of a tap inside the image (XLA leaves the padding's out: 100 in-bounds (row, tap) pairs per axis,
    16 x 7 less 2 x (3 + 2 + 1)) plus 1 per output for the bias, as a GPU would count it, although the CPU runs
    shifted sums (which XLA counts ~30% higher for ConvNeXt); outside the count the layer still takes that form."""
    from asemble_jax.models.registry import forward_gflops

    class Depthwise(nnx.Module):
        def __init__(self):
            self.conv = ConvNeXtBlock(8, rngs=nnx.Rngs(0)).depthwise

        def __call__(self, images, train=False):
            return self.conv(jnp.tile(images, (1, 1, 1, 8))), {}

    model = Depthwise()
    in_bounds_taps_per_axis = 16 * 7 - 2 * (3 + 2 + 1)
    assert forward_gflops(model, 16, 1) * 1e9 == 8 * (2 * in_bounds_taps_per_axis ** 2 + 16 * 16)
    x = jnp.zeros((1, 16, 16, 1), jnp.float32)
    assert "convolution" not in jax.jit(lambda images: model(images)[0]).lower(x).as_text()
    with depthwise_conv.lax_convolutions():
        assert "convolution" in jax.jit(lambda images: model(images)[0]).lower(x).as_text()
