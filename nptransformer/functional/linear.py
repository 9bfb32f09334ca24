"""The affine map y = x Wᵀ + b with PyTorch's weight layout: one fused op, one BLAS call per product.

Built from primitives, ``x @ W.T + b`` is a transpose, a matmul and an add, and the matmul's
backward sees a batched product. Fused, the leading axes of x (batch, time, ...) are flattened
into one axis of rows, so the forward and each gradient is a single 2-D matrix product.
Derivation: docs/derivations/linear.md
"""
from __future__ import annotations

from ..autograd import Function, ShapeError, describe_shapes


def _check_linear(x, weight, bias):
    """Raise one ShapeError naming the shapes, for any inputs linear cannot combine."""
    if weight.ndim != 2:
        raise ShapeError(f"linear: weight must be a matrix of shape (out_features, in_features) "
                         f"({describe_shapes(x=x, weight=weight, bias=bias)})")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: x's last axis must have weight.shape[1] = {weight.shape[1]} features, got x of "
            f"shape {x.shape} ({describe_shapes(x=x, weight=weight, bias=bias)}); expected x of shape "
            f"(..., {weight.shape[1]}) for a weight of shape (out_features, in_features), PyTorch's layout"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"linear: bias must have shape ({weight.shape[0]},), one entry per output feature "
                         f"({describe_shapes(x=x, weight=weight, bias=bias)})")


class Linear(Function):
    """y = x Wᵀ + b, with x (..., in), W (out, in), b (out,) or None, y (..., out).

    With the leading axes of x and dy flattened into rows, X (N, in) and dY (N, out):
        dX = dY W,   dW = dYᵀ X,   db = sum of dY over the rows
    Derivation: docs/derivations/linear.md"""

    name = "linear"

    @staticmethod
    def forward(ctx, x, weight, bias):
        _check_linear(x, weight, bias)
        rows = x.reshape(-1, weight.shape[1])  # (..., in) -> (N, in): one BLAS call for all rows
        y = rows @ weight.T  # (N, out)
        if bias is not None:
            y += bias
        ctx.save_for_backward(x, weight)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))  # (N, out) -> (..., out)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved
        dy_rows = dy.reshape(-1, weight.shape[0])  # (..., out) -> (N, out)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = (dy_rows @ weight).reshape(x.shape)  # (N, out) @ (out, in) -> (N, in) -> (..., in)
        if ctx.needs_input_grad[1]:
            # Every row used the same W, so its gradient is the sum over rows: one (out, N) @ (N, in).
            dweight = dy_rows.T @ x.reshape(-1, weight.shape[1])
        if ctx.needs_input_grad[2]:
            dbias = dy_rows.sum(axis=0)
        return dx, dweight, dbias


def linear(x, weight, bias=None):
    """y = x Wᵀ + b, as ``torch.nn.functional.linear``: weight (out_features, in_features), bias
    (out_features,) or None, x of any leading shape (..., in_features) -> y (..., out_features).

    Backward, with the leading axes flattened to rows: dx = dy W, dW = dyᵀ x (one matrix product
    summing over every row), db = dy summed over the rows.
    Derivation: docs/derivations/linear.md
    """
    return Linear.apply(x, weight, bias)
