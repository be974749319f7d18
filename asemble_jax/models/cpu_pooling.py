"""Max pooling whose gradient the CPU backend computes slowly, with that gradient written out there.

JAX differentiates a max pool (`lax.reduce_window` with `max`) into a select-and-scatter, and XLA's CPU backend
expands that into window indices: in ResNet50's step (batch 16, 128 px, 2 cores) the stem's one 3x3/2 pool left
four int32 index arrays of the padded input's size, a scatter of 4-tuples and a pairwise reduce-window, together
about 150 ms of the step's operation time. The same gradient as 9 masked, strided additions (one per window
position, in the window's row-major order, each taking only the windows whose maximum it is and no earlier
position has claimed: select-and-scatter's `>=` choice of the first maximum on ties) is one elementwise loop
(scripts/benchmark_cpu_vs_torch.py and results/performance/README.md have the step before and after).

`max_pool` is a drop-in for nnx.max_pool over NHWC maps. The forward pass is lax's reduce_window on every backend,
so values and FLOP counts do not change; only the CPU gets the written-out backward (on GPUs and TPUs the
vendor's select-and-scatter is the fast path). Where windows overlap, an input's gradient is summed in another
order than XLA's, so it can differ from autodiff's in the last bit (tests/test_cpu_pooling.py).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def max_pool(x: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> jax.Array:
    """nnx.max_pool(x, window_shape, strides, padding) for x of shape (batch, height, width, channels)."""
    window = tuple(int(w) for w in window_shape)
    strides = tuple(int(s) for s in strides) if strides is not None else (1,) * len(window)
    if x.ndim != 4 or len(window) != 2 or len(strides) != 2:
        raise ValueError(f"max_pool takes NHWC maps and 2-D windows, got shape {x.shape} and window {window}")
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
    pads = tuple((int(low), int(high)) for low, high in padding)  # hashable: a static argument of the VJP
    if jax.default_backend() == "cpu":
        return _max_pool(window, strides, pads, x)
    return _reduce_window(window, strides, pads, x)


def _reduce_window(window, strides, pads, x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _max_pool(window, strides, pads, x):
    return _reduce_window(window, strides, pads, x)


def _forward(window, strides, pads, x):
    y = _reduce_window(window, strides, pads, x)
    return y, (x, y)


def _backward(window, strides, pads, residuals, dy):
    x, y = residuals
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    (padded_h, padded_w), (out_h, out_w) = padded.shape[1:3], y.shape[1:3]
    span_h, span_w = strides[0] * (out_h - 1) + 1, strides[1] * (out_w - 1) + 1
    zero = jnp.zeros((), dy.dtype)
    claimed = jnp.zeros(y.shape, bool)
    d_padded = jnp.zeros(padded.shape, dy.dtype)
    for i in range(window[0]):
        for j in range(window[1]):
            # The inputs at window position (i, j) of every window, one per output.
            at_position = padded[:, i:i + span_h:strides[0], j:j + span_w:strides[1], :]
            chosen = (at_position == y) & ~claimed
            claimed = claimed | chosen
            # Back to their places in the padded input: interior padding undoes the stride.
            d_padded = d_padded + lax.pad(jnp.where(chosen, dy, zero), zero, (
                (0, 0, 0), (i, padded_h - i - span_h, strides[0] - 1), (j, padded_w - j - span_w, strides[1] - 1),
                (0, 0, 0)))
    (top, _), (left, _) = pads
    return (d_padded[:, top:top + x.shape[1], left:left + x.shape[2], :],)


_max_pool.defvjp(_forward, _backward)
