"""Embedding lookup: row ``ids[i]`` of the table for every id, with a scatter-add backward.

Looking up rows is multiplying a one-hot matrix by the table; its gradient is the transposed
one-hot times dy, which adds each position's gradient row into the row of its id. Written out as
that scatter-add it costs N·C additions instead of the N·V·C of the matrix product.
Derivation: docs/derivations/embedding.md
"""
from __future__ import annotations

import numbers

from ..autograd import Function, OpError, ShapeError, Tensor, describe_shapes
from ..backend import get_array_module


def _check_embedding(ids, weight, padding_idx):
    """Raise one OpError naming the shapes and the offending value, for any input embedding cannot take."""
    if weight.ndim != 2:
        raise ShapeError(f"embedding: weight must be a table of shape (V, C), one row per token "
                         f"({describe_shapes(ids=ids, weight=weight)})")
    n_rows = weight.shape[0]
    if ids.dtype.kind not in "iu":
        first = f", the first is {ids.reshape(-1)[0].item()!r}" if ids.size else ""
        raise OpError(
            f"embedding: ids must be integers in [0, {n_rows}), got dtype {ids.dtype}{first} ({describe_shapes(ids=ids, weight=weight)}); "
            "cast token ids to an integer dtype"
        )
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n_rows):
        bad = (ids < 0) | (ids >= n_rows)
        raise OpError(
            f"embedding: {int(bad.sum())} id(s) out of range, the first is {int(ids[bad][0])} ({describe_shapes(ids=ids, weight=weight)}); "
            f"expected ids in [0, {n_rows}), one per row of weight"
        )
    if padding_idx is not None and (
        isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral) or not -n_rows <= padding_idx < n_rows
    ):
        raise OpError(f"embedding: padding_idx={padding_idx!r} is not a row of weight "
                      f"({describe_shapes(ids=ids, weight=weight)}); expected an int in [{-n_rows}, {n_rows}) or None")


class Embedding(Function):
    """y[..., :] = W[ids[...], :] with ids (...) integer, W (V, C), y (..., C).

    With ids and dy flattened to N positions: dW = zeros (V, C); dW[ids[n]] += dy[n] for every n
    (repeated ids accumulate); then dW[padding_idx] = 0. ids take no gradient.
    Derivation: docs/derivations/embedding.md"""

    name = "embedding"

    @staticmethod
    def forward(ctx, ids, weight, padding_idx=None):
        _check_embedding(ids, weight, padding_idx)
        xp = get_array_module(weight)  # Function.apply has checked that ids share its device
        ctx.save_for_backward(ids)
        ctx.weight_shape, ctx.weight_dtype = weight.shape, weight.dtype
        ctx.padding_idx = None if padding_idx is None else padding_idx % weight.shape[0]
        return xp.take(weight, ids, axis=0)  # (...) -> (..., C); take is faster than weight[ids]

    @staticmethod
    def backward(ctx, dy):
        (ids,) = ctx.saved
        xp = get_array_module(dy)
        channels = ctx.weight_shape[1]
        dweight = xp.zeros(ctx.weight_shape, dtype=ctx.weight_dtype)  # (V, C)
        # Scatter-add dy's rows into the rows of their ids. Done on the flat (V*C,) view, one index
        # per element: ufunc.at's one-dimensional path is several times faster than adding rows.
        flat_index = ids.reshape(-1, 1).astype(xp.int64) * channels + xp.arange(channels)  # (N, C)
        xp.add.at(dweight.reshape(-1), flat_index.reshape(-1), dy.reshape(-1))
        if ctx.padding_idx is not None:
            dweight[ctx.padding_idx] = 0  # the padding row takes no gradient
        return None, dweight


def embedding(ids, weight, padding_idx=None):
    """Rows of ``weight`` (V, C) picked by the integer ``ids`` (any shape) -> (*ids.shape, C), as
    ``torch.nn.functional.embedding``.

    ``ids`` may be a Tensor, an integer array on weight's device, or a (nested) list of ints.
    Backward: each position's gradient row is added into row ``ids[position]`` of dweight, so a
    repeated id collects every contribution. ``padding_idx`` (an int in [-V, V), or None): that
    row gets no gradient (its value is used as it is in the forward).
    Derivation: docs/derivations/embedding.md
    """
    if not isinstance(ids, Tensor) and not hasattr(ids, "shape"):  # a list or a Python int
        ids = get_array_module(weight.data if isinstance(weight, Tensor) else weight).asarray(ids)
    return Embedding.apply(ids, weight, padding_idx=padding_idx)
