"""The encoder-decoder Transformer of "Attention Is All You Need", layer for layer as torch.nn's.

Parameter names follow torch.nn (``self_attn``, ``linear1``, ``norm1``, ``dropout1``, ...), so the
code reads like the source's PyTorch layer and ``nptransformer.interop`` maps weights one to one.
"""
from __future__ import annotations

import copy

import numpy

from .attention import MultiheadAttention
from .layers import Dropout, LayerNorm, Linear, activation_fn
from .module import Module, ModuleError, ModuleList, child_rng, xavier_uniform_


def _fresh_copy(layer, rng=None):
    """A deep copy with its own initial weights and random streams (not a clone of ``layer``)."""
    clone = copy.deepcopy(layer)
    for m in clone.modules():
        if isinstance(m, Linear):
            m.reset_parameters(rng)
        elif isinstance(m, (Dropout, MultiheadAttention)):
            m.rng = child_rng(rng)
    return clone


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward network, each with a residual connection and LayerNorm.

    Post-LN by default (``norm1(x + attention)``), exactly the source's layer; ``norm_first=True``
    gives the pre-LN variant (``x + attention(norm1(x))``) that GPT-style models use.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, rng=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, rng=rng)
        self.linear1 = Linear(d_model, dim_feedforward, rng=rng)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, rng=rng)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.activation = activation_fn(activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if self.norm_first:
            src = src + self._sa_block(self.norm1(src), src_mask, src_key_padding_mask, is_causal)
            return src + self._ff_block(self.norm2(src))
        src2 = self.self_attn(src, src, src, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                              need_weights=False, is_causal=is_causal)[0]
        src = src + self.dropout1(src2)
        src = self.norm1(src)
        src2 = self.linear2(self.dropout(self.activation(self.linear1(src))))
        src = src + self.dropout2(src2)
        src = self.norm2(src)
        return src


class TransformerDecoderLayer(Module):
    """Masked self-attention, cross-attention over the encoder's memory, then a feed-forward
    network; each sub-layer with a residual connection and LayerNorm (post-LN by default)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, rng=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, rng=rng)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, rng=rng)
        self.linear1 = Linear(d_model, dim_feedforward, rng=rng)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, rng=rng)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.dropout3 = Dropout(dropout, rng=rng)
        self.activation = activation_fn(activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, cache=None):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal, cache=cache)[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, cache=None):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                need_weights=False, cache=cache)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, self_attn_cache=None, cross_attn_cache=None):
        """With KV caches (see MultiheadAttention): ``tgt`` holds the positions after the cached
        ones, and a filled ``cross_attn_cache`` stands in for ``memory`` (which may be None)."""
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal, self_attn_cache)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, cross_attn_cache)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal, self_attn_cache))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, cross_attn_cache))
        return self.norm3(x + self._ff_block(x))


class TransformerEncoder(Module):
    """``num_layers`` encoder layers (each with its own weights, shaped like ``encoder_layer``),
    then an optional final LayerNorm."""

    def __init__(self, encoder_layer, num_layers, norm=None, rng=None):
        super().__init__()
        self.layers = ModuleList([encoder_layer] + [_fresh_copy(encoder_layer, rng) for _ in range(num_layers - 1)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(Module):
    """``num_layers`` decoder layers, then an optional final LayerNorm."""

    def __init__(self, decoder_layer, num_layers, norm=None, rng=None):
        super().__init__()
        self.layers = ModuleList([decoder_layer] + [_fresh_copy(decoder_layer, rng) for _ in range(num_layers - 1)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, cache=None):
        """``cache``: a DecoderCache(num_layers, cross_attention=True) to read and extend; ``tgt``
        then holds the positions after the cached ones. ``memory`` may be None once the cache's
        cross-attention keys and values are filled (by the first call)."""
        if cache is not None:
            if len(cache.self_attn) != self.num_layers or cache.cross_attn is None:
                raise ModuleError(
                    f"TransformerDecoder: expected DecoderCache({self.num_layers}, cross_attention=True), got {cache!r}"
                )
            if memory is None and len(cache.cross_attn[0]) == 0:
                raise ModuleError("TransformerDecoder: memory is None but the cache holds no cross-attention keys yet")
        x = tgt
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                      self_attn_cache=None if cache is None else cache.self_attn[i],
                      cross_attn_cache=None if cache is None else cache.cross_attn[i])
        return self.norm(x) if self.norm is not None else x


class Transformer(Module):
    """The encoder-decoder of "Attention Is All You Need", architecture as torch.nn.Transformer
    (batch-first): an encoder and a decoder, each ending in a LayerNorm. Weights with two or more
    axes start Xavier-uniform, as in torch."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-5,
                 norm_first=False, rng=None):
        super().__init__()
        if d_model % nhead:
            raise ModuleError(f"Transformer: d_model {d_model} is not divisible by nhead {nhead}")
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, norm_first)
        self.encoder = TransformerEncoder(TransformerEncoderLayer(*layer_args, rng=rng), num_encoder_layers,
                                          LayerNorm(d_model, eps=layer_norm_eps), rng=rng)
        self.decoder = TransformerDecoder(TransformerDecoderLayer(*layer_args, rng=rng), num_decoder_layers,
                                          LayerNorm(d_model, eps=layer_norm_eps), rng=rng)
        self.d_model, self.nhead = d_model, nhead
        for p in self.parameters():
            if p.ndim > 1:
                xavier_uniform_(p, rng)

    @staticmethod
    def generate_square_subsequent_mask(T, dtype=numpy.float32):
        """A (T, T) float mask with -inf above the diagonal and 0 elsewhere, as torch's: position i
        may attend to positions 0..i."""
        return numpy.triu(numpy.full((T, T), -numpy.inf, dtype=dtype), k=1)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
                tgt_is_causal=False):
        if src.shape[0] != tgt.shape[0] or src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ModuleError(
                f"Transformer: expected src (B, S, {self.d_model}) and tgt (B, T, {self.d_model}) with one "
                f"batch size, got src {tuple(src.shape)} and tgt {tuple(tgt.shape)}"
            )
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal)
