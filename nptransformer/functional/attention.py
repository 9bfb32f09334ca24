"""Scaled dot-product attention, fused: ``softmax(Q Kᵀ · scale + mask) V`` as one ``Function``.

Built from primitives, attention is about ten ops (matmul, scale, mask, max, subtract, exp, sum,
divide, dropout, matmul): each makes a new (B, H, T, S) array, three or more of them are kept for
the backward, and the backward makes one more per op. Fused, the forward keeps none: it saves
its inputs q, k, v and the mask, which any attention backward needs (plus a boolean dropout
mask when dropout is on), and the backward rebuilds the attention weights P from them, with one
more Q Kᵀ product and softmax, then goes through the softmax Jacobian by hand.
``attention_from_primitives`` computes the same function the slow way; the tests hold the fused op
to it, and ``docs/scripts/attention_memory.py`` measures what fusing saves.

Masks follow PyTorch's ``scaled_dot_product_attention``: a boolean mask is True where a query
may attend to a key, a floating-point mask is added to the scores, and ``is_causal=True`` lets
query i attend to keys j <= i (top-left aligned when T != S). One deliberate difference: a query
whose whole row is masked gets a zero output and zero gradients, never NaN.
Derivation: docs/derivations/attention.md
"""
from __future__ import annotations

import math

import numpy

from ..autograd import Function, OpError, ShapeError, Tensor, _is_float, describe_shapes
from ..backend import get_array_module
from .primitives import _data, masked_fill

NAME = "scaled_dot_product_attention"


def _check_inputs(q, k, v, mask, is_causal, dropout_p, rng):
    """Raise one OpError / ShapeError naming the op, the shapes and what was expected."""
    expected = "expected q (..., T, D), k (..., S, D), v (..., S, Dv) with the same leading axes"
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ShapeError(f"{NAME}: got {describe_shapes(q=q, k=k, v=v)}; {expected} (at least 2 axes each)")
    if k.shape[:-2] != q.shape[:-2] or v.shape[:-2] != q.shape[:-2]:
        raise ShapeError(f"{NAME}: leading (batch, head) axes differ: {describe_shapes(q=q, k=k, v=v)}; {expected}")
    if k.shape[-1] != q.shape[-1]:
        raise ShapeError(f"{NAME}: q and k need the same feature size D: {describe_shapes(q=q, k=k, v=v)}; {expected}")
    if v.shape[-2] != k.shape[-2]:
        raise ShapeError(f"{NAME}: k and v need the same number of keys S: {describe_shapes(q=q, k=k, v=v)}; {expected}")
    if not (_is_float(q.dtype) and q.dtype == k.dtype == v.dtype):
        raise OpError(f"{NAME}: q, k, v need one floating-point dtype, got {q.dtype}, {k.dtype}, {v.dtype} "
                      f"({describe_shapes(q=q, k=k, v=v)})")
    if not 0.0 <= dropout_p < 1.0:
        raise OpError(f"{NAME}: dropout_p must be in [0, 1), got {dropout_p!r}")
    if rng is not None and not isinstance(rng, numpy.random.Generator):
        raise OpError(f"{NAME}: rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got {type(rng).__name__}")
    if mask is None:
        return
    if is_causal:
        raise OpError(
            f"{NAME}: got both a mask of shape {mask.shape} and is_causal=True (PyTorch refuses this too); "
            "pass one: combine them yourself, e.g. mask & tril(ones(T, S))"
        )
    scores = q.shape[:-1] + (k.shape[-2],)
    if mask.dtype != bool and not _is_float(mask.dtype):
        raise OpError(
            f"{NAME}: the mask must be boolean (True = may attend) or floating-point (added to the "
            f"scores), got dtype {mask.dtype} (mask shape {mask.shape}, scores {scores})"
        )
    try:
        fits = numpy.broadcast_shapes(mask.shape, scores) == scores
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(
            f"{NAME}: a mask of shape {mask.shape} does not broadcast to the scores' shape {scores} "
            f"(..., T, S) for {describe_shapes(q=q, k=k, v=v)}"
        )


def _causal_mask(xp, t, s):
    """(T, S) boolean, True where query i may attend key j, that is j <= i (as torch's is_causal)."""
    return xp.tri(t, s, dtype=bool)


def _dropout_keep(xp, shape, dropout_p, rng):
    """A boolean keep-mask: each entry True with probability 1 - dropout_p, drawn from ``rng``."""
    return xp.asarray(rng.random(shape, dtype=numpy.float32) >= dropout_p)


def _drop(x, keep, dropout_p):
    """Inverted dropout with a given keep-mask: x ⊙ keep / (1 - dropout_p), as a new array."""
    out = x * keep
    out *= 1.0 / (1.0 - dropout_p)
    return out


def _attention_weights(xp, q, k, mask, is_causal, scale):
    """P = softmax(Q Kᵀ · scale + M) along the keys, (..., T, S), computed in one buffer.

    The forward calls it, and the backward calls it again on the same inputs (it gets the same
    P, bit for bit) instead of keeping P. A row with every key masked gets P = 0.
    """
    scores = q @ k.swapaxes(-1, -2)  # (..., T, D) @ (..., D, S) -> (..., T, S)
    scores *= scale
    if is_causal:
        mask = _causal_mask(xp, q.shape[-2], k.shape[-2])
    if mask is not None and mask.dtype == bool:
        xp.copyto(scores, -xp.inf, where=xp.logical_not(mask))
    elif mask is not None:
        scores += mask
    # Softmax along the keys, in place. A row with every key masked has max -inf; shifting it
    # by 0 instead keeps exp(-inf) = 0, and dividing its zero sum by 1 keeps P = 0 there. Without
    # a mask, or with is_causal (which leaves every query key 0), no row can be blocked.
    row_max = scores.max(axis=-1, keepdims=True)  # (..., T, 1)
    dead = None
    if mask is not None and not is_causal:  # only a given mask can block every key of a row
        dead = row_max == -xp.inf
        xp.copyto(row_max, 0, where=dead)
    scores -= row_max
    p = xp.exp(scores, out=scores)
    total = p.sum(axis=-1, keepdims=True)  # (..., T, 1)
    if dead is not None:
        xp.copyto(total, 1, where=dead)
    p /= total
    return p


class ScaledDotProductAttention(Function):
    """out = P_drop V,  P_drop = P ⊙ keep / (1 - p),  P = softmax(Z) along the keys (last axis),
    Z = Q Kᵀ · scale + M, with M = 0 / -inf from a boolean mask (or is_causal), or the float mask.
    dV = P_dropᵀ dO;  dP = (dO Vᵀ) ⊙ keep / (1 - p);  dZ = P ⊙ (dP - rowsum(dP ⊙ P));
    dQ = scale · dZ K;  dK = scale · dZᵀ Q;  dM = dZ
    A row that may attend to nothing has P = 0: its output and gradients are 0, not NaN.
    P is not saved: the backward recomputes it from Q, K and M.
    Derivation: docs/derivations/attention.md"""

    name = NAME

    @staticmethod
    def forward(ctx, q, k, v, mask, is_causal=False, scale=1.0, dropout_p=0.0, rng=None, weights_out=None):
        xp = get_array_module(q)  # Function.apply has checked that k, v and the mask share q's device
        p = _attention_weights(xp, q, k, mask, is_causal, scale)  # (..., T, S)
        keep = None
        p_drop = p
        if dropout_p > 0:
            keep = _dropout_keep(xp, p.shape, dropout_p, rng)
            p_drop = _drop(p, keep, dropout_p)
        # P is the one (..., T, S) float array; keeping it for every layer of a model until the
        # backward would cost T·S floats per head and layer. The backward rebuilds it from q, k
        # and the mask, saved anyway for dQ, dK and dV: one more Q Kᵀ and softmax, no T·S memory.
        ctx.save_for_backward(q, k, v, mask, keep)
        ctx.is_causal, ctx.scale, ctx.dropout_p = is_causal, scale, dropout_p
        if weights_out is not None:
            weights_out.append(p)
        return p_drop @ v  # (..., T, S) @ (..., S, Dv) -> (..., T, Dv)

    @staticmethod
    def weights(ctx):
        """P (..., T, S), rebuilt from what the forward saved by the forward's own function."""
        q, k, v, mask, keep = ctx.saved
        return _attention_weights(get_array_module(q, k, v, mask), q, k, mask, ctx.is_causal, ctx.scale)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, mask, keep = ctx.saved
        need_q, need_k, need_v, need_mask = ctx.needs_input_grad
        dq = dk = dv = dmask = None
        xp = get_array_module(q, k, v, mask)
        p = ScaledDotProductAttention.weights(ctx)  # the forward's P, bit for bit
        if need_v:
            # In the forward, out = P_drop V with P_drop = P ⊙ keep / (1 - p): rebuild P_drop for dV.
            p_drop = p if keep is None else _drop(p, keep, ctx.dropout_p)
            dv = p_drop.swapaxes(-1, -2) @ dout  # (..., S, T) @ (..., T, Dv) -> (..., S, Dv)
            del p_drop  # a (..., T, S) array: free it before dP takes another
        if need_q or need_k or need_mask:
            dp = dout @ v.swapaxes(-1, -2)  # (..., T, Dv) @ (..., Dv, S) -> (..., T, S)
            if keep is not None:  # dropout passed back: the same keep-mask and the same 1 / (1 - p)
                dp *= keep
                dp *= 1.0 / (1.0 - ctx.dropout_p)
            # Softmax Jacobian, row by row: dZ = P ⊙ (dP - rowsum(dP ⊙ P)), written into dp's buffer.
            # einsum sums dP ⊙ P along the keys without building the (..., T, S) product.
            dz = dp
            dz -= xp.einsum("...ts,...ts->...t", dp, p)[..., None]  # (..., T) -> (..., T, 1)
            dz *= p
            if need_q:
                dq = dz @ k  # (..., T, S) @ (..., S, D) -> (..., T, D)
                dq *= ctx.scale
            if need_k:
                dk = dz.swapaxes(-1, -2) @ q  # (..., S, T) @ (..., T, D) -> (..., S, D)
                dk *= ctx.scale
            if need_mask:
                dmask = dz  # the float mask was added to the scores Z: its gradient is dZ itself
        return dq, dk, dv, dmask


def _prepare(q, k, v, mask, is_causal, dropout_p, training, scale, rng):
    """Check the inputs; return (mask, scale, dropout_p, rng) as the op uses them."""
    _check_inputs(_data(q), _data(k), _data(v), _data(mask), is_causal, dropout_p, rng)
    if mask is not None and _data(mask).dtype == bool:
        mask = _data(mask)  # a boolean mask takes no gradient
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    dropout_p = float(dropout_p) if training else 0.0
    if dropout_p > 0 and rng is None:
        rng = numpy.random.default_rng()
    return mask, scale, dropout_p, rng


def scaled_dot_product_attention(
    q, k, v, mask=None, is_causal=False, dropout_p=0.0, training=True, scale=None, rng=None, return_weights=False
):
    """Attention: ``softmax(q kᵀ · scale + mask) v``, with dropout on the weights when training.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv), usually (B, H, T, D); returns (..., T, Dv).
    ``mask`` broadcasts to (..., T, S): boolean True = may attend, or floating-point added to the
    scores (and differentiable). ``is_causal=True`` lets query i attend keys j <= i; it cannot be
    combined with ``mask``. ``scale`` defaults to 1/sqrt(D). Dropout (probability ``dropout_p``,
    inverted, keep-mask drawn from the numpy Generator ``rng``) acts only when ``training``.
    A query that may attend to nothing outputs zeros and gets zero gradients (PyTorch's documented
    reference gives NaN there). With ``return_weights=True`` returns ``(out, weights)``: weights
    is a detached (..., T, S) Tensor of the probabilities after masking, before dropout (the
    backward does not use it: it recomputes them).
    Derivation: docs/derivations/attention.md
    """
    mask, scale, dropout_p, rng = _prepare(q, k, v, mask, is_causal, dropout_p, training, scale, rng)
    weights = [] if return_weights else None
    out = ScaledDotProductAttention.apply(
        q, k, v, mask, is_causal=is_causal, scale=scale, dropout_p=dropout_p, rng=rng, weights_out=weights
    )
    if return_weights:
        return out, Tensor(weights[0])
    return out


def attention_from_primitives(q, k, v, mask=None, is_causal=False, dropout_p=0.0, training=True, scale=None, rng=None):
    """The same attention composed from primitive ops through the autograd (the "composed twin").

    Same arguments and results as ``scaled_dot_product_attention`` (q, k, v as Tensors; the same
    ``rng`` seed draws the same dropout mask), but every intermediate is a Tensor whose op keeps its own arrays for
    the backward. It is the yardstick: the tests hold the fused op to it within 1e-10 in float64,
    and docs/scripts/attention_memory.py measures the memory and time fusing saves.
    """
    mask, scale, dropout_p, rng = _prepare(q, k, v, mask, is_causal, dropout_p, training, scale, rng)
    xp = get_array_module(_data(q))
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (..., T, S)
    if is_causal:
        mask = _causal_mask(xp, q.shape[-2], k.shape[-2])
    if mask is not None and _data(mask).dtype == bool:
        scores = masked_fill(scores, xp.logical_not(mask), -math.inf)
    elif mask is not None:
        scores = scores + mask
    row_max = scores.data.max(axis=-1, keepdims=True)  # a constant: shifting a row leaves softmax unchanged
    dead = row_max == -xp.inf
    xp.copyto(row_max, 0, where=dead)
    e = (scores - Tensor(row_max)).exp()
    weights = e / (e.sum(axis=-1, keepdims=True) + Tensor(dead.astype(row_max.dtype)))  # dead rows: 0 / 1
    if dropout_p > 0:
        keep = _dropout_keep(xp, weights.shape, dropout_p, rng)
        weights = weights * Tensor(keep.astype(weights.dtype)) * (1.0 / (1.0 - dropout_p))
    return weights @ v
