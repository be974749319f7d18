"""The CPU's rewritten convolutions equal lax's: the shifted-sum depthwise convolution its grouped convolution,
the 1x1 convolution as a matrix product its dense one; values, input and weight gradients, for the strides and
padding forms the models use and some they do not, and they are what the models now run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.test_util import check_grads

from asemble_jax.models import cpu_convolution
from asemble_jax.models.baseline_blocks import ConvBN, SeparableConv
from asemble_jax.models.convnext import ConvNeXtBlock
from asemble_jax.models.wide_resnet import WideBasicBlock


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
    actual = jax.jit(cpu_convolution.depthwise, static_argnums=2)(x, kernel, padding)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)

    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=expected.shape), jnp.float32)
    expected_grads = jax.vjp(lambda a, b: _lax_depthwise(a, b, padding), x, kernel)[1](cotangent)
    actual_grads = jax.jit(lambda a, b, c: jax.vjp(lambda p, q: cpu_convolution.depthwise(p, q, padding), a, b)[1](c))(
        x, kernel, cotangent)
    for name, got, want in zip(("input", "kernel"), actual_grads, expected_grads):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)


def test_gradient_matches_finite_differences():
    x, kernel, _ = _inputs((1, 5, 5, 2), (3, 3))
    check_grads(lambda a, b: cpu_convolution.depthwise(a, b, "SAME"), (x, kernel),
                              order=1, modes=["rev"], eps=1e-2, atol=5e-2, rtol=5e-2)


def test_bfloat16_accumulates_in_float32():
    # 49 products summed in bfloat16 would lose about two digits more than the float32-accumulated sum.
    x, kernel, _ = _inputs((2, 9, 9, 8), (7, 7))
    reference = _lax_depthwise(x, kernel, ((3, 3), (3, 3)))
    actual = cpu_convolution.depthwise(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), ((3, 3), (3, 3)))
    assert actual.dtype == jnp.bfloat16
    relative = float(jnp.max(jnp.abs(actual.astype(jnp.float32) - reference)) / jnp.max(jnp.abs(reference)))
    assert relative < 2e-2


def test_anything_but_a_stride_1_depthwise_goes_to_lax_unchanged():
    x, kernel, _ = _inputs((2, 8, 8, 4), (3, 3))
    dims = ("NHWC", "HWIO", "NHWC")
    strided = cpu_convolution.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=dims,
                                                  feature_group_count=4)
    np.testing.assert_array_equal(strided, lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                                                    dimension_numbers=dims, feature_group_count=4))
    dense_kernel = jnp.ones((3, 3, 4, 6), jnp.float32)
    dense = cpu_convolution.conv_general_dilated(x, dense_kernel, (1, 1), "SAME", dimension_numbers=dims)
    np.testing.assert_array_equal(dense, lax.conv_general_dilated(x, dense_kernel, (1, 1), "SAME",
                                                                  dimension_numbers=dims))
    with pytest.raises(ValueError, match="not a stride-1 depthwise"):
        cpu_convolution.depthwise(x, dense_kernel, "SAME")


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
    with cpu_convolution.lax_convolutions():
        assert "convolution" in jax.jit(lambda images: model(images)[0]).lower(x).as_text()


_DIMS = ("NHWC", "HWIO", "NHWC")

POINTWISE_CASES = [  # (input shape, strides, padding): ResNet50's and WideResNet's, then ones they do not use
    ((2, 8, 8, 6), (1, 1), "VALID"),
    ((2, 9, 9, 6), (2, 2), "VALID"),  # odd size: the last row and column are sampled
    ((1, 7, 6, 4), (2, 2), ((0, 0), (0, 0))),
    ((2, 7, 9, 5), (3, 2), "SAME"),  # SAME pads a 1x1 kernel by nothing at any stride
]


@pytest.mark.parametrize("shape,strides,padding", POINTWISE_CASES)
def test_pointwise_values_and_both_gradients_equal_lax(shape, strides, padding):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(1, 1, shape[-1], 7)), jnp.float32)

    def ours(a, b):
        return cpu_convolution.conv_general_dilated(a, b, strides, padding, dimension_numbers=_DIMS)

    def reference(a, b):
        return lax.conv_general_dilated(a, b, strides, padding, dimension_numbers=_DIMS)

    expected = reference(x, kernel)
    actual = jax.jit(ours)(x, kernel)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    actual_grads = jax.jit(lambda a, b, c: jax.vjp(ours, a, b)[1](c))(x, kernel, cotangent)
    expected_grads = jax.vjp(reference, x, kernel)[1](cotangent)
    for got, want in zip(actual_grads, expected_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    hlo = jax.jit(jax.grad(lambda a, b: ours(a, b).sum(), argnums=(0, 1))).lower(x, kernel).as_text()
    assert "convolution" not in hlo


def test_pointwise_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(1, 5, 5, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(1, 1, 3, 2)), jnp.float32)
    check_grads(lambda a, b: cpu_convolution.pointwise(a, b, (2, 2)), (x, kernel), order=1, modes=("rev",),
                atol=1e-2, rtol=1e-2)


def test_pointwise_keeps_the_callers_accumulation_type():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 16)), jnp.bfloat16)
    kernel = jnp.asarray(rng.normal(size=(1, 1, 16, 4)), jnp.bfloat16)
    kept = cpu_convolution.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS)
    assert kept.dtype == lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS).dtype
    wide = cpu_convolution.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS,
                                               preferred_element_type=jnp.float32)
    assert wide.dtype == jnp.float32
    with pytest.raises(ValueError, match="not a 1x1 convolution"):
        cpu_convolution.pointwise(x, jnp.ones((3, 3, 16, 4), jnp.bfloat16))


def test_a_padded_or_dilated_1x1_convolution_goes_to_lax_unchanged():
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(1, 1, 4, 3)), jnp.float32)
    padded = cpu_convolution.conv_general_dilated(x, kernel, (1, 1), ((1, 0), (0, 1)), dimension_numbers=_DIMS)
    np.testing.assert_array_equal(padded, lax.conv_general_dilated(x, kernel, (1, 1), ((1, 0), (0, 1)),
                                                                   dimension_numbers=_DIMS))
    dilated = cpu_convolution.conv_general_dilated(x, kernel, (1, 1), ((0, 0), (0, 0)), lhs_dilation=(2, 2),
                                                  dimension_numbers=_DIMS)
    np.testing.assert_array_equal(dilated, lax.conv_general_dilated(x, kernel, (1, 1), ((0, 0), (0, 0)),
                                                                    lhs_dilation=(2, 2), dimension_numbers=_DIMS))


def test_the_models_1x1_layers_take_the_matrix_form():
    """ResNet50's strided 1x1 ConvBN, Xception's pointwise half and WideResNet's projection shortcut lower without a
    convolution on the CPU, forward and backward, and give lax's numbers; lax_convolutions() brings lax's back."""
    strided = ConvBN(8, 16, 1, strides=2, use_bias=True, rngs=nnx.Rngs(0)).conv
    pointwise = SeparableConv(8, 12, rngs=nnx.Rngs(1)).pointwise
    shortcut = WideBasicBlock(8, 16, 2, use_se=False, se_reduction=4, rngs=nnx.Rngs(2)).shortcut
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 10, 10, 8)), jnp.float32)
    for layer, stride in ((strided, 2), (pointwise, 1), (shortcut, 2)):
        assert layer.kernel.shape[:2] == (1, 1)
        loss = jax.jit(jax.grad(lambda module, inputs: module(inputs).sum()))
        assert "convolution" not in loss.lower(layer, x).as_text()
        expected = lax.conv_general_dilated(x, layer.kernel[...], (stride, stride), "VALID", dimension_numbers=_DIMS)
        if layer.bias is not None:
            expected = expected + layer.bias[...]
        np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
        with cpu_convolution.lax_convolutions():
            assert "convolution" in jax.jit(lambda inputs, layer=layer: layer(inputs)).lower(x).as_text()
