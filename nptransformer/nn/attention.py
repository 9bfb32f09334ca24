"""Multi-head attention: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V), with the masks of torch.nn.MultiheadAttention.
"""
from __future__ import annotations

import numpy

from .. import functional as F
from ..autograd import Tensor
from ..backend import get_array_module
from .layers import Linear
from .module import Module, ModuleError


def _raw(mask):
    return mask.data if isinstance(mask, Tensor) else mask


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
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, rng=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ModuleError(
                f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
            )
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)
        self.k_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)
        self.v_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"

    def _check_inputs(self, query, key, value):
        E = self.embed_dim
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.ndim != 3 or t.shape[-1] != E:
                raise ModuleError(
                    f"MultiheadAttention: expected {name} of shape (B, {'T' if name == 'query' else 'S'}, {E}), "
                    f"got shape {tuple(t.shape)}"
                )
        if not (query.shape[0] == key.shape[0] == value.shape[0]) or key.shape[1] != value.shape[1]:
            raise ModuleError(
                "MultiheadAttention: query, key and value need one batch size and key/value one length; "
                f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )

    def merge_masks(self, attn_mask, key_padding_mask, is_causal, B, T, S, xp):
        """One mask in the convention of F.scaled_dot_product_attention (True = may attend, or a
        float added to the scores), broadcastable to (B, H, T, S); None when nothing is masked."""
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
            parts.append(xp.triu(xp.ones((T, S), dtype=bool), k=1))
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
                need_weights=True, average_attn_weights=True, is_causal=False):
        """Returns (output (B, T, E), weights): weights are averaged over heads (B, T, S), or
        per head (B, H, T, S) with ``average_attn_weights=False``, or None without ``need_weights``."""
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        (B, T, E), S, H, D = query.shape, key.shape[1], self.num_heads, self.head_dim
        xp = get_array_module(query.data)

        q = self.q_proj(query).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, T, E) -> (B, H, T, D)
        k = self.k_proj(key).reshape(B, S, H, D).transpose(0, 2, 1, 3)  # (B, S, E) -> (B, H, S, D)
        v = self.v_proj(value).reshape(B, S, H, D).transpose(0, 2, 1, 3)  # (B, S, E) -> (B, H, S, D)

        only_causal = is_causal and attn_mask is None and key_padding_mask is None
        mask = None if only_causal else self.merge_masks(attn_mask, key_padding_mask, is_causal, B, T, S, xp)
        result = F.scaled_dot_product_attention(
            q, k, v, mask=mask, is_causal=only_causal, dropout_p=self.dropout,
            training=self.training, return_weights=need_weights,
        )
        out, weights = result if need_weights else (result, None)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, E)  # (B, H, T, D) -> (B, T, E)
        if weights is not None and average_attn_weights:
            weights = Tensor(weights.data.mean(axis=1))
        return self.out_proj(out), weights

