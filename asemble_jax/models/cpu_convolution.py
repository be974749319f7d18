"""Convolutions the CPU backend runs slowly, computed another way there: depthwise ones as shifted multiply-adds,
1x1 ones as matrix products.

Depthwise (one filter per channel, stride 1). XLA's CPU backend runs a grouped convolution whose groups are single
channels (ConvNeXt's 7x7 depthwise, the Xception baseline's separable 3x3) through a generic grouped-convolution
kernel. On the demo's ASembleNet-small step (batch 32, 128 px, 2 cores) the ConvNeXt branch's depthwise
convolutions took 52% of the step's operation time (results/performance/step_profile_asemblenet_small_before.md);
a 7x7 depthwise forward on a (32, 32, 32, 24) map took 126 ms, where the same sum written as 49 shifted
multiply-adds, which XLA fuses into one elementwise loop, takes 2.2 ms (results/performance/depthwise_conv.md,
scripts/benchmark_depthwise_conv.py). The backward pass is written out (custom VJP): the input gradient, lax's
other slow part (120 ms there), is the same shifted sum over the output gradient with the kernel flipped; the
weight gradient stays lax's (the transpose of its convolution in the kernel), which is not slow, and compiles
several times faster than 49 per-tap reductions.

Pointwise (1x1 kernel, one group, any stride, no padding). XLA writes the weight gradient of a 1x1 convolution
as a convolution whose batch is the input's channels, so it first copies every such layer's input into a
channel-major transpose; in ResNet50's step (batch 16, 128 px) those copies were the largest operations after
the convolutions (up to 86 ms each). As a strided slice and a matrix product over the channels, both gradients
are matrix products too (dW contracts the slice and the output gradient over batch and space), which the CPU's
matrix kernels take without the copies (results/performance/README.md, "1x1 convolutions as matrix products").

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` (flax's nnx.Conv takes it as an argument), so
the parameters, their names, shapes and initialisation stay nnx.Conv's. It takes another form only where one
applies (the CPU backend, NHWC/HWIO, no dilation, and the kernel shapes above) and hands anything else to lax
unchanged: on GPUs and TPUs the vendor kernels are the fast path. The depthwise sums accumulate in float32
whatever the compute dtype, as XLA's convolutions accumulate, and the products keep the caller's precision and
accumulation type. Under `lax_convolutions()` every convolution is lax's: FLOP counts are taken so (XLA counts the
shifted sums' padding and additions, ~30% more than the convolution's multiply-adds for ConvNeXt alone at 64 px),
so that a model's count, and the compute-matched grids' step counts read from it, do not depend on the backend
that traced it.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC_HWIO = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))
_REWRITES = contextvars.ContextVar("cpu_rewrites", default=True)


@contextlib.contextmanager
def lax_convolutions():
    """Traces every convolution in the block as lax's, on every backend."""
    token = _REWRITES.set(False)
    try:
        yield
    finally:
        _REWRITES.reset(token)


def _explicit_padding(padding, kernel_hw: Sequence[int]) -> tuple[tuple[int, int], ...] | None:
    """((top, bottom), (left, right)) for stride 1, or None where the padding is not one we handle."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        if padding.upper() == "SAME":  # lax's SAME at stride 1: the extra row or column goes after
            return tuple(((k - 1) // 2, k // 2) for k in kernel_hw)
        return None
    pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    return pads if len(pads) == 2 and all(len(pair) == 2 for pair in pads) else None


def _shifted_sum(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
    """sum over taps (i, j) of pad(x)[:, i:i+H_out, j:j+W_out, :] * kernel[i, j, 0, :], accumulated in float32."""
    kh, kw = kernel.shape[:2]
    padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h, out_w = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    total = jnp.zeros((x.shape[0], out_h, out_w, x.shape[3]), jnp.float32)
    for i in range(kh):
        for j in range(kw):
            total = total + (padded[:, i:i + out_h, j:j + out_w, :].astype(jnp.float32)
                             * kernel[i, j, 0].astype(jnp.float32))
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
    return _shifted_sum(x, kernel, pads).astype(x.dtype)


def _depthwise_forward(x, kernel, pads):
    return _depthwise(x, kernel, pads), (x, kernel)


def _depthwise_backward(pads, residuals, grad):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    (top, bottom), (left, right) = pads
    # out[h] = sum_i padded[h + i] k[i], so d x[a] = sum_i' grad_padded[a + i'] k[kh - 1 - i'], with grad padded
    # by kh - 1 minus the forward padding on each side (a negative pad crops).
    grad_pads = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
    grad_padded = lax.pad(grad, jnp.zeros((), grad.dtype),
                          ((0, 0, 0), (*grad_pads[0], 0), (*grad_pads[1], 0), (0, 0, 0)))
    d_x = _shifted_sum(grad_padded, kernel[::-1, ::-1], ((0, 0), (0, 0))).astype(x.dtype)
    # The weight gradient is the one part of lax's grouped convolution that is not slow on the CPU, and 49
    # separate reductions compile several times slower. The transpose alone: no forward convolution is traced.
    d_kernel, = jax.linear_transpose(
        lambda k: lax.conv_general_dilated(x, k, (1, 1), pads, dimension_numbers=_NHWC_HWIO,
                                           feature_group_count=x.shape[3]), kernel)(grad)
    return d_x, d_kernel


_depthwise.defvjp(_depthwise_forward, _depthwise_backward)


def _depthwise_pads(x, kernel, padding) -> tuple[tuple[int, int], ...] | None:
    """The explicit padding where `kernel` is one (kh, kw) filter per channel of NHWC `x`, else None."""
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[3]:
        return None
    return _explicit_padding(padding, kernel.shape[:2])


def depthwise(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
    """The depthwise convolution of NHWC `x` with an HWIO kernel of shape (kh, kw, 1, C), stride 1, as shifted
    multiply-adds; `padding` is "SAME", "VALID" or ((top, bottom), (left, right))."""
    pads = _depthwise_pads(x, kernel, padding)
    if pads is None:
        raise ValueError(f"not a stride-1 depthwise convolution: input {x.shape}, kernel {kernel.shape}, "
                         f"padding {padding}")
    return _depthwise(x, kernel, pads)


def _pointwise_strides(lhs, rhs, window_strides, padding) -> tuple[int, int] | None:
    """The strides where `rhs` is a 1x1 HWIO kernel over NHWC `lhs` and `padding` adds nothing, else None."""
    if lhs.ndim != 4 or rhs.ndim != 4 or rhs.shape[:2] != (1, 1) or rhs.shape[2] != lhs.shape[3]:
        return None
    strides = tuple(window_strides) if window_strides is not None else (1, 1)
    # lax's SAME pads a 1x1 kernel by max((ceil(H / s) - 1) s + 1 - H, 0) = 0 rows at any stride.
    no_padding = (padding.upper() in ("VALID", "SAME") if isinstance(padding, str)
                  else all(int(p) == 0 for pair in padding for p in pair))
    return strides if no_padding and len(strides) == 2 else None


def pointwise(x: jax.Array, kernel: jax.Array, strides: tuple[int, int] = (1, 1), *, precision=None,
              preferred_element_type=None) -> jax.Array:
    """The 1x1 convolution of NHWC `x` with an HWIO kernel of shape (1, 1, C_in, C_out), unpadded, as the
    input's every `strides`-th row and column times the kernel's matrix."""
    if _pointwise_strides(x, kernel, strides, "VALID") is None:
        raise ValueError(f"not a 1x1 convolution: input {x.shape}, kernel {kernel.shape}, strides {strides}")
    sampled = x[:, ::strides[0], ::strides[1], :] if tuple(strides) != (1, 1) else x
    n, h, w, channels = sampled.shape
    # A product of matrices, not of 4-D arrays: the weight gradient then contracts one dimension (batch and
    # space flattened), which the CPU's matrix kernels take 2-5x faster than a contraction over three.
    product = lax.dot_general(sampled.reshape(n * h * w, channels), kernel[0, 0], (((1,), (0,)), ((), ())),
                              precision=precision, preferred_element_type=preferred_element_type)
    return product.reshape(n, h, w, kernel.shape[3])


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """lax.conv_general_dilated, with the CPU's stride-1 depthwise case computed by `depthwise` and its 1x1 case
    by `pointwise`."""
    def unit(values):
        return values is None or all(v == 1 for v in values)

    applies = (_REWRITES.get() and jax.default_backend() == "cpu" and unit(lhs_dilation) and unit(rhs_dilation)
               and kwargs.get("out_sharding") is None
               and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC_HWIO)
    if applies and feature_group_count == 1:
        strides = _pointwise_strides(lhs, rhs, window_strides, padding)
        if strides is not None:
            return pointwise(lhs, rhs, strides, precision=precision,
                             preferred_element_type=kwargs.get("preferred_element_type"))
    depthwise_applies = (applies and unit(window_strides) and feature_group_count == lhs.shape[-1] > 1
                         and kwargs.get("preferred_element_type") is None)
    pads = _depthwise_pads(lhs, rhs, padding) if depthwise_applies else None
    if pads is not None:
        return _depthwise(lhs, rhs, pads)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)
