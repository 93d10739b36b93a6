"""Tolerances for tests that compare two computations of the same math, derived from the dtype and the values.

Two programs that do the same arithmetic in another order (a batch of one against a batch of many, a reordered
sum, one thread against two, AVX2 kernels against AVX-512 or AMX ones) agree only up to rounding, and how the
roundings fall differs from CPU to CPU. So a test of the math never uses a bare tolerance that one CPU happened
to meet. It either runs both sides in float64, where rounding sits ~1e9 below the smallest real bug these tests
look for, or it allows `roundings` x eps(dtype) x the largest magnitude compared, with the count of roundings
named at the call.
"""

from __future__ import annotations

import torch

# Roundings allowed where both sides run in float64: 2**20 x eps64 ~ 2e-10 of the values' scale. Deep enough for a
# whole (micro) model, forward and backward, in any summation order; a wrong layer, activation or mask moves the
# values by 1e-4 or more.
FLOAT64_ROUNDINGS = 2**20
FLOAT64_ATOL = FLOAT64_ROUNDINGS * torch.finfo(torch.float64).eps  # the same, for values of order one


def rounding_atol(expected: torch.Tensor, roundings: float, dtype: torch.dtype | None = None,
                  scale: float | None = None) -> float:
    """The absolute difference that `roundings` roundings of `dtype` (default: `expected`'s) can make on values
    as large as `scale` (default: the largest magnitude in `expected`)."""
    if scale is None:
        scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return roundings * torch.finfo(dtype or expected.dtype).eps * scale


def assert_same_math(actual: torch.Tensor, expected: torch.Tensor, *, roundings: float = FLOAT64_ROUNDINGS,
                     dtype: torch.dtype | None = None, scale: float | None = None) -> None:
    """`actual` equals `expected` up to `roundings` roundings of `dtype` at the values' scale (pass `scale` where
    `expected` is not the size of what was computed, e.g. zeros)."""
    if actual.dtype != expected.dtype:
        raise AssertionError(f"compare like with like: {actual.dtype} against {expected.dtype}")
    torch.testing.assert_close(actual, expected, rtol=0, atol=rounding_atol(expected, roundings, dtype, scale))
