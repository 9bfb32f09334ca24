"""The model families: an encoder-decoder for translation-like tasks, a decoder-only GPT, and an
encoder-only BERT with its pre-training and fine-tuning heads."""
from __future__ import annotations

import math

import numpy

from ..autograd import Tensor
from ..backend import get_array_module
from .attention import MultiheadAttention
from .layers import (
    Dropout,
    Embedding,
    FeedForward,
    LayerNorm,
    LearnedPositionalEmbedding,
    Linear,
    PositionalEncoding,
    activation_fn,
)
from .module import Module, ModuleError, ModuleList, Parameter, default_rng, xavier_uniform_
from .transformer import Transformer, TransformerEncoder, TransformerEncoderLayer


def _ids(module, ids, max_len=None):
    """The integer array behind ``ids`` (B, T), checked for rank, dtype and length."""
    data = ids.data if isinstance(ids, Tensor) else ids
    if data.ndim != 2 or data.dtype.kind not in "iu":
        raise ModuleError(
            f"{type(module).__name__}: expected integer token ids of shape (B, T), got "
            f"shape {tuple(data.shape)} and dtype {data.dtype}"
        )
    if max_len is not None and data.shape[1] > max_len:
        raise ModuleError(f"{type(module).__name__}: sequence length {data.shape[1]} exceeds max_len {max_len}")
    return data


class Seq2SeqTransformer(Module):
    """Token embeddings (scaled by √d_model) + sinusoidal positions + ``Transformer`` + a linear
    projection to target-vocabulary logits. Padding masks come from ``pad_id`` unless given;
    the target side is always causal."""

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=128, nhead=4, num_encoder_layers=2,
                 num_decoder_layers=2, dim_feedforward=512, dropout=0.1, max_len=512, pad_id=0,
                 tie_weights=False, activation="relu", norm_first=False, rng=None):
        super().__init__()
        self.d_model, self.pad_id, self.max_len = d_model, pad_id, max_len
        self.src_tok_emb = Embedding(src_vocab_size, d_model, padding_idx=pad_id, rng=rng)
        self.tgt_tok_emb = Embedding(tgt_vocab_size, d_model, padding_idx=pad_id, rng=rng)
        self.positional = PositionalEncoding(d_model, max_len=max_len, dropout=dropout)
        self.transformer = Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
                                       dim_feedforward, dropout, activation, norm_first=norm_first, rng=rng)
        self.generator = Linear(d_model, tgt_vocab_size, rng=rng)
        for p in (self.src_tok_emb.weight, self.tgt_tok_emb.weight, self.generator.weight):
            xavier_uniform_(p, rng)
        for emb in (self.src_tok_emb, self.tgt_tok_emb):
            emb.weight.data[pad_id] = 0.0
        if tie_weights:
            self.generator.weight = self.tgt_tok_emb.weight

    def _padding(self, ids, mask):
        if mask is not None or self.pad_id is None:
            return mask
        return ids == self.pad_id

    def encode(self, src, src_key_padding_mask=None):
        """Source ids (B, S) -> memory (B, S, C)."""
        src = _ids(self, src, self.max_len)
        x = self.positional(self.src_tok_emb(src) * math.sqrt(self.d_model))
        return self.transformer.encoder(x, src_key_padding_mask=self._padding(src, src_key_padding_mask))

    def decode(self, tgt, memory, memory_key_padding_mask=None, tgt_key_padding_mask=None):
        """Target ids (B, T) and memory (B, S, C) -> logits (B, T, V), causally masked."""
        tgt = _ids(self, tgt, self.max_len)
        y = self.positional(self.tgt_tok_emb(tgt) * math.sqrt(self.d_model))
        y = self.transformer.decoder(y, memory, memory_key_padding_mask=memory_key_padding_mask,
                                     tgt_key_padding_mask=self._padding(tgt, tgt_key_padding_mask),
                                     tgt_is_causal=True)
        return self.generator(y)

    def forward(self, src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None):
        """Source ids (B, S) and shifted target ids (B, T) -> next-token logits (B, T, V)."""
        src_data = _ids(self, src, self.max_len)
        src_pad = self._padding(src_data, src_key_padding_mask)
        memory = self.encode(src_data, src_pad)
        return self.decode(tgt, memory, memory_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_key_padding_mask)


class GPTBlock(Module):
    """Pre-LN decoder block: x + attn(ln1(x)), then x + mlp(ln2(x)), causal self-attention."""

    def __init__(self, d_model, n_heads, dim_feedforward, dropout=0.0, activation="gelu", rng=None):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiheadAttention(d_model, n_heads, dropout=dropout, rng=rng)
        self.ln2 = LayerNorm(d_model)
        self.mlp = FeedForward(d_model, dim_feedforward, dropout=0.0, activation=activation, rng=rng)
        self.dropout = Dropout(dropout)

    def forward(self, x, key_padding_mask=None):
        x = x + self.dropout(self.attn(self.ln1(x), key_padding_mask=key_padding_mask,
                                       need_weights=False, is_causal=True)[0])
        return x + self.dropout(self.mlp(self.ln2(x)))


class GPT(Module):
    """A decoder-only language model: token + learned position embeddings, pre-LN causal
    blocks, a final LayerNorm and a head to vocabulary logits (tied to the token embeddings by
    default). Initialized as GPT-2: N(0, 0.02), residual projections scaled by 1/√(2·n_layers)."""

    def __init__(self, vocab_size, d_model, n_layers, n_heads, max_len, dropout=0.0, tie_weights=True,
                 dim_feedforward=None, activation="gelu", rng=None):
        super().__init__()
        if d_model % n_heads:
            raise ModuleError(f"GPT: d_model {d_model} is not divisible by n_heads {n_heads}")
        rng = rng or default_rng()
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.tok_emb = Embedding(vocab_size, d_model, rng=rng, std=0.02)
        self.pos_emb = LearnedPositionalEmbedding(max_len, d_model, rng=rng)
        self.drop = Dropout(dropout)
        ff = dim_feedforward or 4 * d_model
        self.blocks = ModuleList([GPTBlock(d_model, n_heads, ff, dropout, activation, rng) for _ in range(n_layers)])
        self.ln_f = LayerNorm(d_model)
        self.head = Linear(d_model, vocab_size, bias=False, rng=rng)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0.0
            elif name.endswith(("proj.weight", "linear1.weight", "linear2.weight")) or name == "head.weight":
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("out_proj.weight", "linear2.weight")) else 0.02
                p.data = (rng.standard_normal(p.shape) * std).astype(p.dtype)
        if tie_weights:
            self.head.weight = self.tok_emb.weight

    def forward(self, ids, key_padding_mask=None):
        """Token ids (B, T) -> next-token logits (B, T, V)."""
        ids = _ids(self, ids, self.max_len)
        x = self.drop(self.pos_emb(self.tok_emb(ids)))
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)
        return self.head(self.ln_f(x))


class BertEmbeddings(Module):
    """Token + position + segment (token type) embeddings, then LayerNorm and dropout."""

    def __init__(self, vocab_size, d_model, max_len, type_vocab_size, dropout, layer_norm_eps, pad_id, rng):
        super().__init__()
        self.word_embeddings = Embedding(vocab_size, d_model, padding_idx=pad_id, rng=rng, std=0.02)
        self.position_embeddings = Embedding(max_len, d_model, rng=rng, std=0.02)
        self.token_type_embeddings = Embedding(type_vocab_size, d_model, rng=rng, std=0.02)
        self.LayerNorm = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = Dropout(dropout)

    def forward(self, ids, token_type_ids=None):
        xp = get_array_module(ids)
        B, T = ids.shape
        if token_type_ids is None:
            token_type_ids = xp.zeros((B, T), dtype=ids.dtype)
        x = self.word_embeddings(ids) + self.position_embeddings(xp.arange(T)) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BERT(Module):
    """An encoder-only Transformer: embeddings, post-LN encoder layers with GELU, and a pooler
    (a tanh layer on the first token, ``[CLS]``).

    ``forward(ids, token_type_ids=None, attention_mask=None)`` returns (sequence output
    (B, T, C), pooled output (B, C)); ``attention_mask`` is 1 for real tokens, 0 for padding
    (the Hugging Face convention), or derived from ``pad_id``.
    """

    def __init__(self, vocab_size, d_model=256, n_layers=4, n_heads=4, max_len=512, dim_feedforward=None,
                 dropout=0.1, type_vocab_size=2, layer_norm_eps=1e-12, pad_id=0, activation="gelu", rng=None):
        super().__init__()
        rng = rng or default_rng()
        self.d_model, self.pad_id, self.max_len = d_model, pad_id, max_len
        self.embeddings = BertEmbeddings(vocab_size, d_model, max_len, type_vocab_size, dropout,
                                         layer_norm_eps, pad_id, rng)
        layer = TransformerEncoderLayer(d_model, n_heads, dim_feedforward or 4 * d_model, dropout,
                                        activation, layer_norm_eps)
        self.encoder = TransformerEncoder(layer, n_layers)
        self.pooler = Linear(d_model, d_model, rng=rng)

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        ids = _ids(self, ids, self.max_len)
        if attention_mask is not None:
            mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            padding = mask == 0
        else:
            padding = ids == self.pad_id if self.pad_id is not None else None
        x = self.encoder(self.embeddings(ids, token_type_ids), src_key_padding_mask=padding)
        pooled = self.pooler(x[:, 0]).tanh()
        return x, pooled


class BertForMaskedLM(Module):
    """BERT with its masked-language-model head: dense + GELU + LayerNorm, then a projection to
    the vocabulary tied to the word embeddings (plus its own bias)."""

    def __init__(self, bert: BERT, activation="gelu"):
        super().__init__()
        C = bert.d_model
        V = bert.embeddings.word_embeddings.num_embeddings
        self.bert = bert
        self.transform = Linear(C, C)
        self.activation = activation_fn(activation)
        self.transform_norm = LayerNorm(C, eps=bert.embeddings.LayerNorm.eps)
        self.decoder_bias = Parameter(numpy.zeros(V, dtype=numpy.float32))

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        x, _ = self.bert(ids, token_type_ids, attention_mask)
        h = self.transform_norm(self.activation(self.transform(x)))
        return h @ self.bert.embeddings.word_embeddings.weight.T + self.decoder_bias


class BertForSequenceClassification(Module):
    """BERT + dropout + a linear classifier on the pooled ``[CLS]`` output: logits (B, num_labels)."""

    def __init__(self, bert: BERT, num_labels, dropout=0.1):
        super().__init__()
        self.bert = bert
        self.dropout = Dropout(dropout)
        self.classifier = Linear(bert.d_model, num_labels)

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        _, pooled = self.bert(ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(pooled))


class BertForTokenClassification(Module):
    """BERT + dropout + a linear classifier on every token: logits (B, T, num_labels)."""

    def __init__(self, bert: BERT, num_labels, dropout=0.1):
        super().__init__()
        self.bert = bert
        self.dropout = Dropout(dropout)
        self.classifier = Linear(bert.d_model, num_labels)

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        x, _ = self.bert(ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(x))
