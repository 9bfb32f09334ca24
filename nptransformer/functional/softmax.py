"""Softmax, log-softmax and cross-entropy: three fused ops with hand-derived backward passes.

Built from primitives, ``softmax`` would be five ops (max, subtract, exp, sum, divide), each
saving its own array for the backward. Fused, each op is one ``Function`` that saves a single
array (softmax and log_softmax their output; cross_entropy its input, the logits, and two
numbers per row) and whose backward is one line of algebra, derived in
``docs/derivations/softmax.md`` and ``docs/derivations/cross_entropy.md``. All three subtract the
maximum along the class axis before ``exp``, so logits of any size give finite results in float32.
"""
from __future__ import annotations

import numbers

from ..autograd import Function, OpError, ShapeError, Tensor, _is_float
from ..backend import get_array_module

REDUCTIONS = ("mean", "sum", "none")


def _check_axis(op, x, axis):
    """``axis`` must name one non-empty axis of the floating-point array ``x``."""
    if not _is_float(x.dtype):
        raise OpError(f"{op}: expects floating-point input, got dtype {x.dtype} (shape {x.shape})")
    if not isinstance(axis, (int, numbers.Integral)) or not -x.ndim <= axis < x.ndim:  # int first: ABC checks are slow
        raise ShapeError(
            f"{op}: axis {axis!r} does not name an axis of the input of shape {x.shape}; "
            f"expected an int in [{-x.ndim}, {x.ndim})"
        )
    if x.shape[axis] == 0:
        raise ShapeError(f"{op}: axis {axis} of the input of shape {x.shape} is empty; a softmax needs at least one entry")


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x)      along ``axis``
    dx = y * (dy - sum(dy * y, axis, keepdims=True))
    Derivation: docs/derivations/softmax.md"""

    @staticmethod
    def forward(ctx, x, axis=-1):  # x: (..., n, ...), n = x.shape[axis]
        _check_axis("softmax", x, axis)
        xp = get_array_module(x)
        y = xp.exp(x - x.max(axis=axis, keepdims=True))
        y /= y.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(y)  # y suffices; x is not kept
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        return y * (dy - (dy * y).sum(axis=ctx.axis, keepdims=True))


class LogSoftmax(Function):
    """y = (x - max x) - log sum exp(x - max x)      along ``axis``
    dx = dy - exp(y) * sum(dy, axis, keepdims=True)
    Derivation: docs/derivations/cross_entropy.md"""

    name = "log_softmax"

    @staticmethod
    def forward(ctx, x, axis=-1):
        _check_axis("log_softmax", x, axis)
        xp = get_array_module(x)
        y = x - x.max(axis=axis, keepdims=True)
        y -= xp.log(xp.exp(y).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved
        xp = get_array_module(y)
        return dy - xp.exp(y) * dy.sum(axis=ctx.axis, keepdims=True)


def _check_cross_entropy(logits, target, ignore_index, label_smoothing, reduction):
    """Raise one OpError, naming the shapes and what was expected, for any input we cannot take."""
    shapes = f"(logits shape {logits.shape}, target shape {target.shape})"

    def fail(problem, expected, error=OpError):
        raise error(f"cross_entropy: {problem} {shapes}; expected {expected}")

    if reduction not in REDUCTIONS:
        fail(f"unknown reduction {reduction!r}", f"one of {REDUCTIONS}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) or not 0 <= label_smoothing <= 1:
        fail(f"label_smoothing={label_smoothing!r} is not allowed", "a number in [0, 1]")
    if not _is_float(logits.dtype):
        fail(f"logits have dtype {logits.dtype}", "floating-point logits")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        fail("logits have no class axis", "logits of shape (..., V) with V >= 1 classes on the last axis", ShapeError)
    if target.dtype.kind not in "iu":
        fail(f"target has dtype {target.dtype}", "integer class indices")
    if target.shape != logits.shape[:-1]:
        fail("target does not match the logits' leading shape", f"a target of shape {logits.shape[:-1]}", ShapeError)
    n_classes = logits.shape[-1]
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
    if bad.any():
        fail(
            f"{int(bad.sum())} target(s) out of range, the first is {int(target[bad][0])}",
            f"class indices in [0, {n_classes}) or ignore_index={ignore_index}",
        )


class CrossEntropy(Function):
    """Cross-entropy of logits ``x`` (..., V) against integer targets ``t`` (...), fused with log-softmax.

    With p = softmax(x) and the smoothed target q = (1 - eps) onehot(t) + eps / V, per position:
        loss = -sum_c q_c log p_c = (1 - eps) (lse - z_t) + eps / V (V lse - sum_c z_c)
    where z = x - max x and lse = log sum exp z; positions with t == ignore_index give 0.
    Reduced by "mean" (over the n_valid non-ignored positions), "sum" or "none".
        dx = (p - q) * dout / n_valid    (mean; "sum" drops the / n_valid, "none" uses each dout)
    and dx = 0 on ignored positions.
    Derivation: docs/derivations/cross_entropy.md"""

    name = "cross_entropy"

    @staticmethod
    def forward(ctx, logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
        _check_cross_entropy(logits, target, ignore_index, label_smoothing, reduction)
        xp = get_array_module(logits, target)
        eps, n_classes = float(label_smoothing), logits.shape[-1]
        x = logits.reshape(-1, n_classes)  # (..., V) -> (M, V), M = number of positions
        valid = target.reshape(-1) != ignore_index  # (M,)
        n_valid = int(valid.sum())
        if reduction == "mean" and n_valid == 0:
            raise OpError(
                f"cross_entropy: every target equals ignore_index={ignore_index} (logits shape "
                f"{logits.shape}, target shape {target.shape}), so the mean over valid targets "
                "divides by zero (PyTorch returns NaN here); expected at least one valid target. "
                "Skip this batch, or use reduction='sum' and divide by your own count"
            )
        rows = xp.arange(x.shape[0])
        t = xp.where(valid, target.reshape(-1), 0)  # ignored positions read class 0; zeroed below

        x_max = x.max(axis=1)  # (M,)
        z = x - x_max[:, None]  # (M, V), every entry <= 0: exp cannot overflow
        z_target = z[rows, t]  # (M,)
        z_sum = z.sum(axis=1) if eps else None  # (M,), only label smoothing needs it
        sum_exp = xp.exp(z, out=z).sum(axis=1)  # (M,), in [1, V]: its log is safe (exp in z's buffer)
        lse = xp.log(sum_exp)  # log sum exp z, (M,)
        loss = lse - z_target  # -log p_t = -(z_t - lse)
        if eps:
            loss = (1 - eps) * loss + (eps / n_classes) * (n_classes * lse - z_sum)
        loss[~valid] = 0

        # Saved: the logits, the one (M, V) array kept, and two numbers per row; not p (M, V)
        # as well, which the backward rebuilds from them in the buffer that becomes dx.
        ctx.save_for_backward(x, x_max, lse, t, valid)
        ctx.shape, ctx.eps, ctx.reduction, ctx.n_valid = logits.shape, eps, reduction, n_valid
        if reduction == "none":
            return loss.reshape(target.shape)
        if reduction == "sum":
            return loss.sum()
        return loss.sum() / n_valid

    @staticmethod
    def probabilities(ctx):
        """p = softmax(logits) (M, V), a new array rebuilt from what the forward saved."""
        x, x_max, lse, t, valid = ctx.saved
        xp = get_array_module(x)
        p = x - x_max[:, None]  # z, the forward's numbers (from x itself, log p would lose digits)
        p -= lse[:, None]  # log p = z - lse, (M, V)
        return xp.exp(p, out=p)

    @staticmethod
    def backward(ctx, dout):
        x, x_max, lse, t, valid = ctx.saved
        xp = get_array_module(x)
        eps, n_classes = ctx.eps, x.shape[1]
        # In the forward, loss = -sum_c q_c log p_c; so now dloss/dx = p - q, row by row,
        # times each row's weight r: dx = r p - r eps / V - r (1 - eps) onehot(t).
        if ctx.reduction == "none":
            weight = dout.reshape(-1) * valid  # each position's own upstream gradient, (M,)
        elif ctx.reduction == "sum":
            weight = dout * valid
        else:
            weight = (dout / ctx.n_valid) * valid  # ignored rows get weight 0
        dx = CrossEntropy.probabilities(ctx)  # p = softmax(x), rebuilt; dx is made in its buffer
        dx *= weight[:, None]
        if eps:
            dx -= (eps / n_classes) * weight[:, None]
        dx[xp.arange(x.shape[0]), t] -= (1 - eps) * weight
        return dx.reshape(ctx.shape), None


def softmax(x, axis=-1):
    """exp(x) / sum exp(x) along ``axis``, computed stably (the max is subtracted first).

    Forward: y = exp(x - max x) / sum exp(x - max x).  Backward: dx = y * (dy - sum(dy * y)).
    Derivation: docs/derivations/softmax.md
    """
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, without ever taking the log of an underflowed 0.

    Forward: y = (x - max x) - log sum exp(x - max x).  Backward: dx = dy - exp(y) * sum(dy).
    Derivation: docs/derivations/cross_entropy.md
    """
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy between ``logits`` (..., V) and integer class indices ``target`` (...).

    The same loss as ``torch.nn.functional.cross_entropy`` with class-index targets, except that
    the classes sit on the LAST axis ((N, V) or (B, T, V)), where PyTorch wants them on axis 1.

    Forward, per position: loss = -sum_c q_c log softmax(logits)_c, with the smoothed target
    q = (1 - label_smoothing) onehot(target) + label_smoothing / V; 0 where target == ignore_index.
    ``reduction``: "mean" averages over the non-ignored positions, "sum" adds them, "none" keeps
    the shape of ``target``. Backward: dlogits = (softmax(logits) - q) * dout / n_valid for "mean".

    ``target`` may be a Tensor, an integer array on the logits' device, or a list of ints. With
    reduction="mean" and every target ignored, PyTorch returns NaN; this raises an OpError
    instead, so a NaN never reaches the optimizer unnoticed.
    Derivation: docs/derivations/cross_entropy.md
    """
    if not isinstance(target, Tensor) and not hasattr(target, "shape"):  # a list or a Python int
        target = get_array_module(logits.data if isinstance(logits, Tensor) else logits).asarray(target)
    return CrossEntropy.apply(
        logits, target, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction
    )
