"""Texts longer than a model's ``max_len``: truncation, sliding windows, pooling, strided scoring.

A Transformer reads at most ``max_len`` tokens at once. A learned position embedding has
exactly ``max_len`` rows, so position ``max_len`` has no vector at all, and attention costs time
and memory in T² besides. A longer text must be cut. Two remedies:

**Truncation** keeps ``max_len`` tokens and drops the rest:

- ``"head"``: the first ``max_len`` tokens (what tokenizers do by default);
- ``"tail"``: the last ``max_len`` tokens;
- ``"head+tail"``: the first ``head`` and the last ``max_len - head`` tokens. Sun et al. (2019,
  *How to fine-tune BERT for text classification?*) kept 128 + 382 of 510 tokens of long reviews
  and did better than with either end alone; the default ``head`` is that share, a quarter.

**Sliding windows** cover every token. Windows of ``window`` tokens start every ``stride``
tokens (0, stride, 2·stride, ...) until one reaches the end of the text; the last one may be
shorter. With ``stride == window`` they are disjoint chunks; with a smaller stride consecutive
windows overlap by ``window - stride`` tokens. Each token is *new* in exactly one window, the
first that contains it: window k's new tokens are those after the end of window k - 1, so its
first ``n_context`` tokens are context that an earlier window has already covered::

    ids:        t0 t1 t2 t3 t4 t5 t6 t7 t8 t9          window = 4, stride = 2
    window 0:   t0 t1 t2 t3                             n_context = 0: all new
    window 1:         t2 t3 t4 t5                       n_context = 2: t4 t5 new
    window 2:               t4 t5 t6 t7                 n_context = 2: t6 t7 new
    window 3:                     t6 t7 t8 t9           n_context = 2: t8 t9 new

What is done with the windows depends on the task:

- classification or sentence embeddings: run the model on each window and pool the results
  (``pool_windows``: the mean, or the max when one window that says "yes" should decide);
- a language model's likelihood (``strided_token_nll``): each window scores only its new tokens,
  with the overlap as their context, so every token is scored once and, with a small stride,
  with nearly ``window`` tokens of context (the method of Hugging Face's guide "Perplexity of
  fixed-length models").

Ids are 1-D sequences of integers (lists or NumPy arrays); results are NumPy arrays.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import get_array_module

TRUNCATION_SIDES = ("head", "tail", "head+tail")
POOLING = ("mean", "max")


def _ids(fn: str, ids) -> np.ndarray:
    """``ids`` as a 1-D int64 array, or a ValueError naming ``fn``."""
    data = np.asarray(ids)
    if data.ndim != 1 or (data.size and data.dtype.kind not in "iu"):
        raise ValueError(f"{fn}: ids must be a 1-D sequence of integer token ids, got shape {data.shape}, "
                         f"dtype {data.dtype}")
    return data.astype(np.int64)


def _int_in(fn: str, name: str, value, low: int = 1, high: int | None = None, why: str = "") -> int:
    """``value`` as an int in [low, high], or a ValueError naming ``fn`` and ``name``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low or \
            (high is not None and value > high):
        expected = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}{why}")
    return int(value)


def truncate(ids, max_len: int, side: str = "head", head: int | None = None) -> np.ndarray:
    """At most ``max_len`` of ``ids``: the first (``side="head"``), the last (``"tail"``), or the
    first ``head`` and the last ``max_len - head`` (``"head+tail"``; ``head`` defaults to
    ``max_len // 4``). A text that fits is returned whole. Leave room for special tokens
    yourself: ``[CLS] + truncate(ids, 510) + [SEP]`` fits a 512-position BERT.

    >>> truncate(range(10), 4, "head+tail", head=1).tolist()
    [0, 7, 8, 9]
    """
    data = _ids("truncate", ids)
    max_len = _int_in("truncate", "max_len", max_len)
    if side not in TRUNCATION_SIDES:
        raise ValueError(f"truncate: side must be one of {TRUNCATION_SIDES}, got {side!r}")
    if head is not None and side != "head+tail":
        raise ValueError(f"truncate: head={head!r} is only used with side='head+tail', got side={side!r}")
    head = max_len // 4 if head is None else _int_in("truncate", "head", head, 0, max_len)
    if data.size <= max_len:
        return data
    if side == "head":
        return data[:max_len]
    if side == "tail":
        return data[data.size - max_len:]
    return np.concatenate([data[:head], data[data.size - (max_len - head):]])


class Window(NamedTuple):
    """One window of ``sliding_windows``: ``ids`` are the tokens ``text[start:start + len(ids)]``;
    the first ``n_context`` of them belong to the window before too, the rest are new here."""

    start: int
    ids: np.ndarray  # (<= window,) int64
    n_context: int

    @property
    def new_ids(self) -> np.ndarray:
        """The tokens this window is the first to contain."""
        return self.ids[self.n_context:]


def sliding_windows(ids, window: int, stride: int) -> list[Window]:
    """Windows of ``window`` tokens starting every ``stride`` tokens, until one reaches the end
    (see the module docstring). Every token is new in exactly one window. A text of at most
    ``window`` tokens is one window; an empty text has none. ``stride`` must be from 1 to
    ``window``: a larger one would skip the tokens between two windows.

    >>> [(w.start, w.ids.tolist(), w.n_context) for w in sliding_windows(range(7), 4, 3)]
    [(0, [0, 1, 2, 3], 0), (3, [3, 4, 5, 6], 1)]
    """
    data = _ids("sliding_windows", ids)
    window = _int_in("sliding_windows", "window", window)
    stride = _int_in("sliding_windows", "stride", stride, 1, window,
                           why=" (a stride larger than the window would skip the tokens between windows)")
    windows, covered = [], 0  # covered: the end of the previous window
    for start in range(0, data.size, stride):
        end = min(start + window, data.size)
        windows.append(Window(start, data[start:end], covered - start))
        covered = end
        if end == data.size:
            break
    return windows


def pool_windows(values, how: str = "mean", weights=None) -> np.ndarray:
    """Pool per-window results ``values`` (W, ...) over the windows (axis 0) into one (...).

    ``how="mean"``: the average, weighted by ``weights`` (W,) if given (e.g. each window's
    number of new tokens, so that a window that mostly repeats the one before counts less);
    ``how="max"``: the element-wise maximum (one window that fires is enough).
    """
    data = np.asarray(values)
    if data.ndim < 1 or data.shape[0] == 0 or data.dtype.kind not in "iuf":
        raise ValueError(f"pool_windows: values must be a numeric array (W, ...) with at least one window, "
                         f"got shape {data.shape}, dtype {data.dtype}")
    if how not in POOLING:
        raise ValueError(f"pool_windows: how must be one of {POOLING}, got {how!r}")
    if how == "max":
        if weights is not None:
            raise ValueError("pool_windows: weights are only used with how='mean'")
        return data.max(axis=0)
    if weights is None:
        return data.mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != data.shape[:1] or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"pool_windows: weights must be {data.shape[0]} non-negative numbers, one per window, "
                         f"not all zero; got shape {w.shape}")
    return np.tensordot(w / w.sum(), data, axes=1)


class TokenScores(NamedTuple):
    """``strided_token_nll``'s result, one entry per scored token ``ids[1:]``."""

    nll: np.ndarray  # (N - 1,) float64: -log p(ids[j + 1] | the window's tokens up to ids[j])
    context: np.ndarray  # (N - 1,) int64: how many tokens the model read to predict it

    def perplexity(self) -> float:
        """exp of the mean negative log-likelihood per token."""
        return float(np.exp(self.nll.mean()))


def strided_token_nll(logits_fn: Callable, ids, window: int, stride: int, batch_size: int = 64) -> TokenScores:
    """Score every token of a text longer than a causal language model's context.

    ``logits_fn(inputs)``: token ids (B, T) int64, ``T <= window``, -> next-token logits
    (B, T, V), a Tensor or an array (the model in eval mode, e.g. ``model.eval()`` first, and
    on the device of the ids it gets). Token ``ids[j + 1]`` is predicted from ``ids[j]`` and
    the tokens before it in the same window. The inputs ``ids[:-1]`` are cut by
    ``sliding_windows(ids[:-1], window, stride)``, and each window keeps the scores of its new
    positions only, so every token after the first is scored once:

    - ``stride == window``: disjoint chunks; a chunk's first token is predicted from one token,
      its second from two, ... (on average about ``window / 2`` tokens of context);
    - ``stride == 1``: every token but the first ``window`` ones is predicted from exactly
      ``window`` tokens, the most the model can read, for one forward pass per token.

    Runs under ``no_grad``, ``batch_size`` windows of one length per call. Prepend a BOS id to
    ``ids`` to have the first real token scored too.
    """
    data = _ids("strided_token_nll", ids)
    if data.size < 2:
        raise ValueError(f"strided_token_nll: ids must hold at least 2 tokens (one to read, one to predict), "
                         f"got {data.size}")
    batch_size = _int_in("strided_token_nll", "batch_size", batch_size)
    inputs, targets = data[:-1], data[1:]
    windows = sliding_windows(inputs, window, stride)
    nll = np.empty(targets.size, dtype=np.float64)
    context = np.empty(targets.size, dtype=np.int64)
    by_length = {}
    for w in windows:
        by_length.setdefault(w.ids.size, []).append(w)
    with no_grad():
        for T, group in by_length.items():
            for first in range(0, len(group), batch_size):
                part = group[first:first + batch_size]
                x = np.stack([w.ids for w in part])  # (B, T)
                y = np.stack([targets[w.start:w.start + T] for w in part])  # (B, T): x shifted by one
                logits = logits_fn(x)  # (B, T, V)
                xp = get_array_module(logits.data if isinstance(logits, Tensor) else logits)
                losses = F.cross_entropy(logits, xp.asarray(y), reduction="none").numpy()  # (B, T)
                for w, row in zip(part, losses):
                    new = slice(w.start + w.n_context, w.start + T)
                    nll[new] = row[w.n_context:]
                    context[new] = np.arange(w.n_context, T) + 1
    return TokenScores(nll, context)
