"""gradcheck: compare a backward pass with finite differences, and explain any mismatch.

For a function ``fn`` of some tensors, draw a random upstream gradient ``r`` with the output's
shape and look at the scalar ``L = sum(fn(*inputs) * r)``. Its analytic gradient comes from
``backward``; its numeric gradient from central differences, one element at a time:

    dL/dx[i] ≈ (L(x[i] + eps) - L(x[i] - eps)) / (2 eps)

Everything runs in float64: in float32 the rounding error of a difference quotient (about
1e-7 / eps) is larger than the mismatches we want to catch.
"""
from __future__ import annotations

import numpy

from .autograd import Tensor, _is_float, no_grad
from .backend import get_array_module, to_device


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with the numeric one; the message says where and how."""


def _prepare(inputs):
    """float64 copies of the inputs; returns (arguments, indices of the checked inputs)."""
    args, checked = [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and _is_float(x.dtype):
            args.append(Tensor(x.data.astype(numpy.float64), requires_grad=x.requires_grad))
            if x.requires_grad:
                checked.append(i)
        elif hasattr(x, "dtype") and hasattr(x, "shape") and _is_float(x.dtype):
            args.append(Tensor(x.astype(numpy.float64), requires_grad=True))
            checked.append(i)
        else:
            args.append(x)
    return args, checked


def _scalar(out, r):
    return float((out.data * r).sum())


def _hint(analytic, numeric) -> str:
    """A guess at what kind of mistake turns ``numeric`` into ``analytic``."""
    a, n = analytic.ravel(), numeric.ravel()
    scale = float(numpy.abs(n).max()) or 1.0
    if not numpy.any(a):
        return ("The analytic gradient is all zeros. Does backward return the gradient for this "
                "input (and not None or zeros), and does the input reach the output?")
    if numpy.allclose(a, -n, rtol=1e-4, atol=1e-6 * scale):
        return "The analytic gradient is the numeric one with the sign flipped: look for a missing minus sign."
    nz = numpy.abs(n) > 1e-6 * scale
    if nz.any():
        ratio = a[nz] / n[nz]
        if numpy.allclose(ratio, ratio[0], rtol=1e-3) and numpy.allclose(a, ratio[0] * n, atol=1e-6 * scale):
            return (f"The analytic gradient is the numeric one times {ratio[0]:.6g} everywhere: a constant "
                    "factor is missing or extra (a 1/N from a mean, a 1/sqrt(d), a factor 2 from a square?).")
    if analytic.ndim == 2 and analytic.shape[0] == analytic.shape[1] and numpy.allclose(analytic, numeric.T, rtol=1e-4, atol=1e-6 * scale):
        return "The analytic gradient is the transpose of the numeric one: check the order of a matmul or a missing .T."
    if not numpy.all(numpy.isfinite(a)):
        return "The analytic gradient has NaN or Inf: look for a division by zero or an overflowing exp."
    return ("Compare the two arrays element by element: a wrong term usually shows as a pattern "
            "(one row, one column, the diagonal, or only where an input is negative).")


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0):
    """Check ``fn``'s backward against central finite differences, in float64.

    ``inputs`` is a sequence of ``fn``'s positional arguments. Floating-point Tensors with
    ``requires_grad=True`` and plain floating-point arrays are checked; everything else (integer
    targets, masks, Python values) is passed through unchanged. The inputs are copied to float64
    first and are never modified.

    An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``. Returns True, or
    raises ``GradcheckError`` naming the input, the worst element's index, both values and a hint.
    """
    args, checked = _prepare(inputs)
    if not checked:
        raise ValueError(
            "gradcheck: none of the inputs is checked; pass floating-point Tensors with "
            "requires_grad=True (or floating-point arrays) for the inputs to differentiate"
        )
    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if not _is_float(out.dtype):
        raise TypeError(f"gradcheck: fn must return a floating-point Tensor, got dtype {out.dtype}")
    xp = get_array_module(out.data)
    rng = numpy.random.default_rng(seed)
    r_host = rng.standard_normal(out.shape)
    r = xp.asarray(r_host) if xp is not numpy else r_host
    if not out.requires_grad:
        raise GradcheckError(
            "gradcheck: the output does not depend on any checked input through the autograd "
            "(was it computed inside no_grad(), or from .data / .numpy() of an input?)"
        )
    out.backward(xp.asarray(r, dtype=out.dtype))

    for i in checked:
        x = args[i]
        analytic = x.grad
        if analytic is None:
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.shape}) received no gradient. Either it does not "
                "reach the output, or a backward on its path returned None for it."
            )
        analytic = to_device(analytic, "cpu")
        numeric = numpy.zeros(x.shape, dtype=numpy.float64)
        flat = x.data.reshape(-1)
        with no_grad():
            for j in range(flat.size):
                old = flat[j].item()
                flat[j] = old + eps
                plus = _scalar(fn(*args), r)
                flat[j] = old - eps
                minus = _scalar(fn(*args), r)
                flat[j] = old
                numeric.flat[j] = (plus - minus) / (2 * eps)
        excess = numpy.abs(analytic - numeric) - (atol + rtol * numpy.abs(numeric))
        excess = numpy.where(numpy.isnan(excess), numpy.inf, excess)
        bad = excess > 0
        if bad.any():
            worst = numpy.unravel_index(int(numpy.argmax(excess)), x.shape) if x.ndim else ()
            raise GradcheckError(
                f"gradcheck: the gradient of input {i} (shape {x.shape}) is wrong at "
                f"{int(bad.sum())} of {x.size} elements.\n"
                f"  worst element: index {tuple(int(k) for k in worst)}\n"
                f"    analytic (your backward): {analytic[worst]:.10g}\n"
                f"    numeric  (finite diff.):  {numeric[worst]:.10g}\n"
                f"  allowed difference there: {atol + rtol * abs(numeric[worst]):.3g} "
                f"(atol={atol}, rtol={rtol})\n"
                f"  hint: {_hint(analytic, numeric)}"
            )
    return True
