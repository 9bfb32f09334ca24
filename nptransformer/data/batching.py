"""Batches of token ids, their padding, and the masks attention needs. All arrays are NumPy.

Conventions (the same as ``torch.nn.MultiheadAttention`` and ``torch.nn.Transformer``):

- ``key_padding_mask`` (B, S) bool: **True marks padding**, a key no query may attend to.
- ``causal_mask(T)`` (T, T) bool: **True marks a pair that may NOT attend**: query i may not see
  key j > i. (Careful: ``torch.nn.functional.scaled_dot_product_attention`` reads a bool mask the
  other way round, True meaning "may attend"; pass it ``~causal_mask(T)``.)

Ids are int64, padding goes on the right, and the trainer moves the arrays to its device.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np


def pad_batch(seqs, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences of different lengths into one array, padding on the right.

    Returns ``ids`` (B, T) int64 with ``T`` the longest length, and ``key_padding_mask`` (B, T)
    bool, True where ``ids`` holds padding.

    >>> ids, pad = pad_batch([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), pad.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[False, False, False], [False, True, True]])
    """
    seqs = list(seqs)
    if not seqs:
        raise ValueError("pad_batch: got no sequences; a batch needs at least one")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)  # (B,)
    values = np.array(list(itertools.chain.from_iterable(seqs)))  # all tokens, row after row
    if values.size and values.dtype.kind not in "iu":
        raise ValueError(f"pad_batch: token ids must be integers, got dtype {values.dtype}")
    T = int(lengths.max())
    key_padding_mask = np.arange(T)[None, :] >= lengths[:, None]  # (B, T)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    ids[~key_padding_mask] = values  # row-major order of the True cells == the order of `values`
    return ids, key_padding_mask


def causal_mask(T: int, S: int | None = None) -> np.ndarray:
    """(T, S) bool, True where query i may NOT attend to key j (torch.nn's ``attn_mask`` convention).

    With ``S = T`` (the default) that is ``j > i``: the strict upper triangle. With more keys than
    queries (``S > T``, decoding with a cache of earlier keys) the queries are the *last* T
    positions, so query i sits at position ``i + S - T`` and may not see ``j > i + S - T``.

    >>> causal_mask(3).astype(int).tolist()
    [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
    """
    S = T if S is None else S
    if T < 0 or S < T:
        raise ValueError(f"causal_mask: need 0 <= T <= S, got T={T}, S={S}")
    return np.triu(np.ones((T, S), dtype=bool), k=S - T + 1)


class Seq2SeqBatch(NamedTuple):
    """One batch for an encoder-decoder (teacher forcing). B rows; S source and T target positions.

    ``tgt_in`` is what the decoder reads (``<bos> y1 ... yn``) and ``tgt_out`` what it must
    predict at each position (``y1 ... yn <eos>``): the same row shifted by one.
    """

    src: np.ndarray  # (B, S) int64
    src_padding_mask: np.ndarray  # (B, S) bool, True = padding
    tgt_in: np.ndarray  # (B, T) int64
    tgt_out: np.ndarray  # (B, T) int64
    tgt_padding_mask: np.ndarray  # (B, T) bool, True = padding in both tgt_in and tgt_out


def seq2seq_batch(src_seqs, tgt_seqs, pad_id: int, bos_id: int, eos_id: int) -> Seq2SeqBatch:
    """Pad source and target id sequences into a ``Seq2SeqBatch``.

    The loss should skip positions where ``tgt_padding_mask`` is True (equivalently, where
    ``tgt_out == pad_id``: use ``pad_id`` as the ignore index).
    """
    src_seqs, tgt_seqs = list(src_seqs), list(tgt_seqs)
    if len(src_seqs) != len(tgt_seqs):
        raise ValueError(f"seq2seq_batch: {len(src_seqs)} source sequences but {len(tgt_seqs)} targets")
    src, src_padding_mask = pad_batch(src_seqs, pad_id)
    tgt_in, tgt_padding_mask = pad_batch([[bos_id, *t] for t in tgt_seqs], pad_id)
    tgt_out, _ = pad_batch([[*t, eos_id] for t in tgt_seqs], pad_id)
    return Seq2SeqBatch(src, src_padding_mask, tgt_in, tgt_out, tgt_padding_mask)


def lm_batches(token_ids, batch_size: int, context: int, seed: int, num_batches: int | None = None):
    """Random windows for language modelling: yields ``(inputs, targets)``, each (B, context) int64,
    with ``targets[b, t] == inputs[b, t + 1]``: the token that follows ``inputs[b, t]``.

    Each row is a window of ``context + 1`` consecutive tokens starting at a position drawn
    uniformly (with replacement) from ``token_ids``. Runs forever unless ``num_batches`` is given.
    """
    data = np.asarray(token_ids)
    if data.ndim != 1 or (data.size and data.dtype.kind not in "iu"):
        raise ValueError(f"lm_batches: token_ids must be a 1-D sequence of integers, got shape {data.shape}, dtype {data.dtype}")
    if batch_size < 1 or context < 1:
        raise ValueError(f"lm_batches: batch_size and context must be >= 1, got {batch_size} and {context}")
    if data.size < context + 1:
        raise ValueError(f"lm_batches: {data.size} tokens cannot fill a window of context + 1 = {context + 1} tokens")
    data = data.astype(np.int64, copy=False)
    rng = np.random.default_rng(seed)
    offsets = np.arange(context)  # (context,)
    produced = 0
    while num_batches is None or produced < num_batches:
        starts = rng.integers(0, data.size - context, size=batch_size)  # (B,), each in [0, N - context - 1]
        positions = starts[:, None] + offsets  # (B, context)
        yield data[positions], data[positions + 1]
        produced += 1
