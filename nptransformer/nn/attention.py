"""Multi-head attention: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V), with the masks of torch.nn.MultiheadAttention;
and the KV cache that lets a decoder generate one token at a time without recomputing the prefix.
"""
from __future__ import annotations

import numpy

from .. import functional as F
from ..autograd import Tensor, is_grad_enabled
from ..backend import get_array_module
from .layers import Linear
from .module import Module, ModuleError, child_rng


def _raw(mask):
    return mask.data if isinstance(mask, Tensor) else mask


class KVCache:
    """The keys and values one attention layer has computed so far, kept for incremental decoding.

    A causal decoder that has scored positions 0..L-1 and is given token L needs the keys and
    values of positions 0..L-1 again, and they have not changed: causal masking means position
    j < L never saw token L. So each step projects only the new position and appends it here,
    and the new query attends to every cached key: one token's work per step instead of L+1.

    ``keys``, ``values``: arrays (B, H, S, D), None while empty. ``padding``: boolean (B, S), True
    marks a padding key; None while no cached key is padding.

    * ``static=False`` (self-attention): each ``update`` appends the new positions. They are
      written in place into buffers with room to spare, which double in length when full, so a
      step copies only its own keys and values, not the S cached ones (``keys`` and ``values``
      are views of the filled part).
    * ``static=True`` (cross-attention): the first ``update`` stores the keys and values of the
      encoder's memory; later calls reuse them and do not project the memory again.

    The arrays are plain arrays on the model's device (NumPy or CuPy, taken from the inputs), not
    Tensors: no gradient flows through a cache, so MultiheadAttention accepts one only inside
    ``no_grad()``.
    """

    def __init__(self, static=False):
        self.static = static
        self.padding = None
        self._keys = self._values = None  # buffers (B, H, capacity, D); positions [0, _length) are filled
        self._length = 0

    @property
    def keys(self):
        return None if self._keys is None else self._keys[:, :, : self._length]

    @property
    def values(self):
        return None if self._values is None else self._values[:, :, : self._length]

    def __len__(self):
        """The number of cached positions S."""
        return self._length

    def __repr__(self):
        shape = None if self._keys is None else tuple(self.keys.shape)
        return f"KVCache(static={self.static}, keys={shape})"

    def update(self, k, v, key_padding_mask=None):
        """Append keys and values (B, H, T, D) of T new positions and ``key_padding_mask`` (B, T)
        of those positions (boolean, True = padding; None = no padding); return the cached
        (keys, values, padding) of every position, the new ones included."""
        if self.static and self._keys is not None:
            raise ModuleError("KVCache: a static (cross-attention) cache is filled once; it was already filled")
        xp = get_array_module(k, v)
        B, T = k.shape[0], k.shape[2]
        if key_padding_mask is not None:
            key_padding_mask = xp.asarray(_raw(key_padding_mask))
            if key_padding_mask.dtype != bool or key_padding_mask.shape != (B, T):
                raise ModuleError(
                    f"KVCache: the key_padding_mask of the new positions must be boolean ({B}, {T}), got "
                    f"dtype {key_padding_mask.dtype} and shape {tuple(key_padding_mask.shape)}"
                )
        if self._keys is None:  # the first positions: kept as they are, until more arrive
            self._keys, self._values, self.padding, self._length = k, v, key_padding_mask, T
            return k, v, key_padding_mask
        S = self._length
        if self._keys.shape[0] != B or self._keys.shape[1::2] != k.shape[1::2]:
            raise ModuleError(
                f"KVCache: new keys of shape {tuple(k.shape)} do not extend cached keys of shape "
                f"{tuple(self.keys.shape)}; expected (B, H, T, D) with the cache's B, H and D"
            )
        if self.padding is not None or key_padding_mask is not None:
            past = xp.zeros((B, S), dtype=bool) if self.padding is None else self.padding
            new = xp.zeros((B, T), dtype=bool) if key_padding_mask is None else key_padding_mask
            self.padding = xp.concatenate([past, new], axis=1)  # (B, S) + (B, T) -> (B, S + T)
        if S + T > self._keys.shape[2]:
            self._grow(S + T, xp)
        self._keys[:, :, S : S + T] = k  # (B, H, T, D) into positions S .. S + T - 1
        self._values[:, :, S : S + T] = v
        self._length = S + T
        return self.keys, self.values, self.padding

    def _grow(self, length, xp):
        """Move the cached positions into new buffers of twice the capacity (at least ``length``):
        over n steps the buffers grow about log2(n) times, each copying what is cached."""
        capacity = max(2 * self._keys.shape[2], length)
        S = self._length
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            B, H, _, D = old.shape
            buffer = xp.empty((B, H, capacity, D), dtype=old.dtype)  # (B, H, capacity, D)
            buffer[:, :, :S] = old[:, :, :S]
            setattr(self, name, buffer)

    def select(self, rows):
        """A new cache holding batch rows ``rows`` of this one, in that order (a row may repeat):
        how beam search follows each surviving hypothesis back to its parent."""
        cache = KVCache(static=self.static)
        if self._keys is not None:
            xp = get_array_module(self._keys)
            rows = xp.asarray(rows)
            cache._keys = xp.take(self.keys, rows, axis=0)  # (B, H, S, D) -> (len(rows), H, S, D)
            cache._values = xp.take(self.values, rows, axis=0)
            cache._length = self._length
            if self.padding is not None:
                cache.padding = xp.take(self.padding, rows, axis=0)
        return cache


class DecoderCache:
    """The KV caches of a stack of decoder layers: per layer one for self-attention and, in an
    encoder-decoder, one (static) for cross-attention over the encoder's memory.

    ``GPT.forward(ids, cache=...)`` and ``Seq2SeqTransformer.decode(tgt, memory, cache=...)`` take
    one: they then read ``ids`` / ``tgt`` as the positions that FOLLOW the cached ones (their
    positional encodings start at ``len(cache)``) and append them.
    """

    def __init__(self, num_layers, cross_attention=False):
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache(static=True) for _ in range(num_layers)] if cross_attention else None

    def __len__(self):
        """The number of positions cached so far (the position of the next token)."""
        return len(self.self_attn[0]) if self.self_attn else 0

    def __repr__(self):
        cross = "" if self.cross_attn is None else ", cross_attention=True"
        return f"DecoderCache(num_layers={len(self.self_attn)}, positions={len(self)}{cross})"

    def select(self, rows):
        """A new DecoderCache with batch rows ``rows`` of every layer's caches (KVCache.select)."""
        cache = DecoderCache(0)
        cache.self_attn = [c.select(rows) for c in self.self_attn]
        if self.cross_attn is not None:
            cache.cross_attn = [c.select(rows) for c in self.cross_attn]
        return cache


class MultiheadAttention(Module):
    """Self- or cross-attention with ``num_heads`` heads of width ``embed_dim // num_heads``.

    Separate Q, K, V and output projections (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``);
    ``nptransformer.interop`` converts to and from PyTorch's packed ``in_proj_weight``.
    Inputs are batch-first: query (B, T, E), key and value (B, S, E).

    Masks follow torch.nn.MultiheadAttention:
    - ``key_padding_mask`` (B, S): True (or a float added to the scores) marks padding keys.
    - ``attn_mask`` (T, S) or (B·H, T, S): boolean True = NOT allowed, or a float mask added to
      the scores (use -inf to forbid).
    A query allowed to see no key at all gets zeros (not NaN).

    With a ``cache`` (a KVCache, inside ``no_grad()``), the T queries are the positions that follow
    the cached ones: their keys and values are appended to the cache and they attend to all of
    them, and ``is_causal`` lets query i see the cached keys and new keys 0..i (the mask is aligned
    to the bottom-right of (T, S), not the top-left). ``key_padding_mask`` then covers only the new
    keys (B, T); the cache remembers the padding of the old ones. A static cache that is already
    filled (cross-attention) supplies keys, values and their padding itself: ``key`` and ``value``
    are ignored.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, rng=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ModuleError(
                f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
            )
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout = dropout
        self.rng = child_rng(rng)  # the stream for dropout on the attention weights
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)
        self.k_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)
        self.v_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"

    def _check_inputs(self, query, key, value):
        E = self.embed_dim
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t is None or (name != "query" and t is query):  # a filled static cache, or self-attention's query again
                continue
            if t.ndim != 3 or t.shape[-1] != E:
                raise ModuleError(
                    f"MultiheadAttention: expected {name} of shape (B, {'T' if name == 'query' else 'S'}, {E}), "
                    f"got shape {tuple(t.shape)}"
                )
        if key is None or key is value is query:
            return
        if not (query.shape[0] == key.shape[0] == value.shape[0]) or key.shape[1] != value.shape[1]:
            raise ModuleError(
                "MultiheadAttention: query, key and value need one batch size and key/value one length; "
                f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )

    def _split_heads(self, x):
        """(B, T, E) -> (B, H, T, D): a Tensor, or an array on its way into a KV cache.

        Under no_grad a Tensor is split as its array, by two NumPy calls instead of two op calls:
        there is no graph to record, and the result is the same."""
        if isinstance(x, Tensor) and not is_grad_enabled():
            return Tensor(self._split_heads(x.data))
        B, T, _ = x.shape
        return x.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def _merge_heads(self, x):
        """(B, H, T, D) -> (B, T, E), the inverse of _split_heads (under no_grad, on the array too)."""
        if isinstance(x, Tensor) and not is_grad_enabled():
            return Tensor(self._merge_heads(x.data))
        B, _, T, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, self.embed_dim)

    def merge_masks(self, attn_mask, key_padding_mask, is_causal, B, T, S, xp, causal_offset=0):
        """One mask in the convention of F.scaled_dot_product_attention (True = may attend, or a
        float added to the scores), broadcastable to (B, H, T, S); None when nothing is masked.
        With ``is_causal``, query i may attend keys j <= i + ``causal_offset``."""
        H = self.num_heads
        parts = []
        if attn_mask is not None:
            m = xp.asarray(_raw(attn_mask))
            if m.shape == (T, S):
                parts.append(m)
            elif m.shape == (B * H, T, S):
                parts.append(m.reshape(B, H, T, S))
            else:
                raise ModuleError(
                    f"MultiheadAttention: attn_mask must have shape ({T}, {S}) or ({B * H}, {T}, {S}), "
                    f"got {tuple(m.shape)}"
                )
        if key_padding_mask is not None:
            m = xp.asarray(_raw(key_padding_mask))
            if m.shape != (B, S):
                raise ModuleError(
                    f"MultiheadAttention: key_padding_mask must have shape ({B}, {S}), got {tuple(m.shape)}"
                )
            parts.append(m[:, None, None, :])  # (B, S) -> (B, 1, 1, S)
        if is_causal:
            parts.append(xp.triu(xp.ones((T, S), dtype=bool), k=1 + causal_offset))  # True: j > i + offset
        if not parts:
            return None
        if all(p.dtype == bool for p in parts):
            blocked = parts[0]
            for p in parts[1:]:
                blocked = blocked | p
            return ~blocked
        additive = 0
        for p in parts:
            if p.dtype == bool:
                p = xp.where(p, xp.asarray(-numpy.inf, dtype=xp.float32), xp.asarray(0.0, dtype=xp.float32))
            additive = additive + p
        return additive

    def forward(self, query, key=None, value=None, key_padding_mask=None, attn_mask=None,
                need_weights=True, average_attn_weights=True, is_causal=False, cache=None):
        """Returns (output (B, T, E), weights): weights are averaged over heads (B, T, S), or
        per head (B, H, T, S) with ``average_attn_weights=False``, or None without ``need_weights``.
        ``cache``: a KVCache to read and extend (see the class docstring)."""
        if cache is not None and is_grad_enabled():
            raise ModuleError(
                "MultiheadAttention: a KV cache holds plain arrays that no gradient flows through; "
                "call the model inside nptransformer.no_grad() when passing cache="
            )
        cached_cross = cache is not None and cache.static and len(cache) > 0
        if cached_cross:
            key = value = None
        else:
            key = query if key is None else key
            value = key if value is None else value
        self._check_inputs(query, key, value)
        B, T, _ = query.shape
        xp = get_array_module(query.data)

        q = self._split_heads(self.q_proj(query))  # (B, T, E) -> (B, H, T, D)
        if cached_cross:
            if cache.keys.shape[0] != B:
                raise ModuleError(
                    f"MultiheadAttention: the static cache holds keys for batch {cache.keys.shape[0]}, "
                    f"got a query of shape {tuple(query.shape)}"
                )
            k, v, key_padding_mask = Tensor(cache.keys), Tensor(cache.values), cache.padding
        elif cache is not None:  # no gradient flows into a cache: the new keys and values go in as arrays
            keys, values, key_padding_mask = cache.update(
                self._split_heads(self.k_proj(key).data), self._split_heads(self.v_proj(value).data), key_padding_mask
            )
            k, v = Tensor(keys), Tensor(values)  # (B, H, S_cached + S, D)
        else:
            k, v = self._split_heads(self.k_proj(key)), self._split_heads(self.v_proj(value))  # (B, S, E) -> (B, H, S, D)
        S = k.shape[2]

        causal_offset = 0
        if is_causal and cache is not None and not cache.static:
            causal_offset = S - T  # the T queries are the last T of the S positions
            is_causal = T > 1  # one new query may see every cached key: nothing to mask
        only_causal = is_causal and causal_offset == 0 and attn_mask is None and key_padding_mask is None
        mask = None
        if not only_causal:
            mask = self.merge_masks(attn_mask, key_padding_mask, is_causal, B, T, S, xp, causal_offset)
        result = F.scaled_dot_product_attention(
            q, k, v, mask=mask, is_causal=only_causal, dropout_p=self.dropout,
            training=self.training, return_weights=need_weights, rng=self.rng,
        )
        out, weights = result if need_weights else (result, None)
        out = self._merge_heads(out)  # (B, H, T, D) -> (B, T, E)
        if weights is not None and average_attn_weights:
            weights = Tensor(weights.data.mean(axis=1))
        return self.out_proj(out), weights
