"""Layer normalization over the last axis: one fused op with a hand-derived backward.

Built from primitives, ``layer_norm`` is about ten ops (mean, subtract, square, mean, add, sqrt,
divide, multiply, add), each saving its own arrays. Fused, the forward saves its input x
(as PyTorch's layer norm does) and two numbers per row (the mean μ and the reciprocal
standard deviation 1/σ); the backward rebuilds x̂ = (x - μ)/σ from them in one pass and is
three lines, derived in ``docs/derivations/layer_norm.md``.
"""
from __future__ import annotations

from ..autograd import Function, OpError, ShapeError, _is_float, describe_shapes
from ..backend import get_array_module


def _check_layer_norm(x, weight, bias, eps):
    """Raise one OpError naming the shapes, for any input layer_norm cannot take."""
    if not _is_float(x.dtype):
        raise OpError(f"layer_norm: expects floating-point x, got dtype {x.dtype} "
                      f"({describe_shapes(x=x, weight=weight, bias=bias)})")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ShapeError(f"layer_norm: x needs a non-empty last axis to normalize over "
                         f"({describe_shapes(x=x, weight=weight, bias=bias)}); expected x of shape (..., C), C >= 1")
    channels = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (channels,):
            raise ShapeError(
                f"layer_norm: {name} has shape {p.shape} but x has shape {x.shape} ({describe_shapes(x=x, weight=weight, bias=bias)}); "
                f"expected {name} of shape ({channels},), one entry per feature of x's last axis"
            )
    if not eps > 0:
        raise OpError(f"layer_norm: eps must be a positive number, got {eps!r} "
                      f"({describe_shapes(x=x, weight=weight, bias=bias)})")


class LayerNorm(Function):
    """Normalize each row of x (its last axis, C features), then scale by γ and shift by β:

        μ = mean(x),  σ² = mean((x - μ)²)  (biased),  x̂ = (x - μ) / sqrt(σ² + eps),  y = x̂ γ + β

    Backward, with g = dy γ and every mean over the last axis:
        dx = (1/σ) (g - mean(g) - x̂ mean(g x̂))
        dγ = sum of dy x̂ over all leading axes,   dβ = sum of dy over all leading axes
    Derivation: docs/derivations/layer_norm.md"""

    name = "layer_norm"

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):  # x: (..., C); weight, bias: (C,) or None
        _check_layer_norm(x, weight, bias, eps)
        xp = get_array_module(x)  # Function.apply has checked that weight and bias share x's device
        channels = x.shape[-1]
        mean = x.sum(axis=-1, keepdims=True)  # sums, not x.mean: NumPy's mean adds a Python layer per call
        mean /= channels  # μ, (..., 1)
        xhat = x - mean  # x - μ, (..., C)
        var = (xhat * xhat).sum(axis=-1, keepdims=True)
        var /= channels  # v, the biased variance, (..., 1)
        rstd = 1 / xp.sqrt(var + eps)  # 1/σ with σ = sqrt(v + eps), (..., 1)
        xhat *= rstd  # x̂ = (x - μ)/σ, in place: x - μ is not needed again
        # Saved: x (as PyTorch's layer norm saves it) and two numbers per row; not x̂, which
        # would be one more (..., C) array per layer norm until the backward rebuilds it.
        ctx.save_for_backward(x, mean, rstd, weight)
        y = xhat  # y = x̂ γ + β, in x̂'s buffer
        if weight is not None:
            y *= weight
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def normalized(ctx):
        """x̂ = (x - μ)/σ, rebuilt from what the forward saved with the forward's own operations."""
        x, mean, rstd, weight = ctx.saved
        xhat = x - mean
        xhat *= rstd
        return xhat

    @staticmethod
    def backward(ctx, dy):
        x, mean, rstd, weight = ctx.saved
        xhat = LayerNorm.normalized(ctx)  # x̂, as in the forward
        lead = tuple(range(dy.ndim - 1))  # every axis but the last: all rows share γ and β
        dweight = (dy * xhat).sum(axis=lead) if ctx.needs_input_grad[1] else None
        dbias = dy.sum(axis=lead) if ctx.needs_input_grad[2] else None
        dx = None
        if ctx.needs_input_grad[0]:
            # In the forward y = x̂ γ + β; so the gradient reaching x̂ is g = dy γ.
            g = dy * weight if weight is not None else dy
            # x̂ = (x - μ)/σ with μ and σ functions of the whole row: the mean path gives -mean(g),
            # the variance path -x̂ mean(g x̂), and the direct path g; all scaled by 1/σ.
            dx = g - g.mean(axis=-1, keepdims=True)
            dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
            dx *= rstd
        return dx, dweight, dbias


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Layer normalization over the last axis of ``x`` (..., C), as ``torch.nn.functional.layer_norm``
    with ``normalized_shape=(C,)``.

    Forward: x̂ = (x - mean(x)) / sqrt(var(x) + eps) with the biased variance, row by row;
    y = x̂ * weight + bias (``weight`` and ``bias`` of shape (C,); either may be None).
    Backward: dx = (1/σ)(g - mean(g) - x̂ mean(g x̂)) with g = dy * weight;
    dweight = sum(dy * x̂), dbias = sum(dy) over the leading axes.
    A constant row (σ = 0) gives x̂ = 0 and finite gradients: eps keeps 1/σ at most 1/sqrt(eps).
    Derivation: docs/derivations/layer_norm.md
    """
    return LayerNorm.apply(x, weight, bias, eps=eps)
