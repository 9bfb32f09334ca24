"""The model families: an encoder-decoder for translation-like tasks, a decoder-only GPT, and an
encoder-only BERT with its pre-training and fine-tuning heads."""
from __future__ import annotations

import math

import numpy

from ..autograd import Tensor
from ..backend import get_array_module
from .attention import DecoderCache, MultiheadAttention
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
        self.positional = PositionalEncoding(d_model, max_len=max_len, dropout=dropout, rng=rng)
        self.transformer = Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
                                       dim_feedforward, dropout, activation, norm_first=norm_first, rng=rng)
        self.generator = Linear(d_model, tgt_vocab_size, rng=rng)
        for p in (self.src_tok_emb.weight, self.tgt_tok_emb.weight, self.generator.weight):
            xavier_uniform_(p, rng)
        for emb in (self.src_tok_emb, self.tgt_tok_emb):
            emb.weight.data[pad_id] = 0.0
        if tie_weights:
            self.generator.weight = self.tgt_tok_emb.weight

    def padding_mask(self, ids):
        """True where ``ids`` (B, T) holds ``pad_id``: the keys attention skips (None without a pad_id)."""
        return None if self.pad_id is None else ids == self.pad_id

    def _padding(self, ids, mask):
        return self.padding_mask(ids) if mask is None else mask

    def new_cache(self):
        """An empty DecoderCache for ``decode(..., cache=)``: one token at a time, see generate."""
        return DecoderCache(self.transformer.decoder.num_layers, cross_attention=True)

    def encode(self, src, src_key_padding_mask=None):
        """Source ids (B, S) -> memory (B, S, C)."""
        src = _ids(self, src, self.max_len)
        x = self.positional(self.src_tok_emb(src) * math.sqrt(self.d_model))
        return self.transformer.encoder(x, src_key_padding_mask=self._padding(src, src_key_padding_mask))

    def decode(self, tgt, memory, memory_key_padding_mask=None, tgt_key_padding_mask=None, cache=None):
        """Target ids (B, T) and memory (B, S, C) -> logits (B, T, V), causally masked.

        With a ``cache`` (``new_cache()``, inside no_grad): ``tgt`` holds the positions after the
        ``len(cache)`` cached ones and is appended to the cache; the first call also caches the
        memory's cross-attention keys and values, so later calls may pass ``memory=None``.
        """
        tgt = _ids(self, tgt, self.max_len)
        offset = 0 if cache is None else len(cache)
        y = self.positional(self.tgt_tok_emb(tgt) * math.sqrt(self.d_model), offset)
        y = self.transformer.decoder(y, memory, memory_key_padding_mask=memory_key_padding_mask,
                                     tgt_key_padding_mask=self._padding(tgt, tgt_key_padding_mask),
                                     tgt_is_causal=True, cache=cache)
        return self.generator(y)

    def forward(self, src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None):
        """Source ids (B, S) and shifted target ids (B, T) -> next-token logits (B, T, V)."""
        src_data = _ids(self, src, self.max_len)
        src_pad = self._padding(src_data, src_key_padding_mask)
        memory = self.encode(src_data, src_pad)
        return self.decode(tgt, memory, memory_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_key_padding_mask)

    def generate(self, src_ids, bos_id, eos_id, max_len, *, beam_size=1, length_penalty=0.0,
                 length_penalty_style="hf", repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True):
        """Translate every row of ``src_ids`` (B, S) (padded with ``pad_id``): beam search (greedy
        with ``beam_size=1``) for all B sources at once, one decoder call per step.

        Returns B token lists; each excludes BOS and ends with EOS when it was produced, at most
        ``max_len`` tokens. The options are those of nptransformer.decoding.beam_search. Runs in
        eval mode (dropout off) under no_grad, with a KV cache unless ``use_cache=False``.
        See nptransformer/decoding/generate.py.
        """
        from ..decoding.generate import generate_seq2seq  # decoding builds on nn: imported at call time

        return generate_seq2seq(self, src_ids, bos_id, eos_id, max_len, beam_size=beam_size,
                                length_penalty=length_penalty, length_penalty_style=length_penalty_style,
                                repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                                use_cache=use_cache)


class GPTBlock(Module):
    """Pre-LN decoder block: x + attn(ln1(x)), then x + mlp(ln2(x)), causal self-attention."""

    def __init__(self, d_model, n_heads, dim_feedforward, dropout=0.0, activation="gelu", rng=None):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiheadAttention(d_model, n_heads, dropout=dropout, rng=rng)
        self.ln2 = LayerNorm(d_model)
        self.mlp = FeedForward(d_model, dim_feedforward, dropout=0.0, activation=activation, rng=rng)
        self.dropout = Dropout(dropout, rng=rng)

    def forward(self, x, key_padding_mask=None, cache=None):
        x = x + self.dropout(self.attn(self.ln1(x), key_padding_mask=key_padding_mask,
                                       need_weights=False, is_causal=True, cache=cache)[0])
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
        self.drop = Dropout(dropout, rng=rng)
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

    def new_cache(self):
        """An empty DecoderCache for ``forward(..., cache=)``: one token at a time, see generate."""
        return DecoderCache(len(self.blocks))

    def forward(self, ids, key_padding_mask=None, cache=None):
        """Token ids (B, T) -> next-token logits (B, T, V).

        With a ``cache`` (``new_cache()``, inside no_grad): ``ids`` are the positions after the
        ``len(cache)`` cached ones (learned positions start there) and are appended to the cache;
        ``key_padding_mask`` (B, T), if any, covers these positions only.
        """
        ids = _ids(self, ids, self.max_len)
        offset = 0
        if cache is not None:
            if len(cache.self_attn) != len(self.blocks) or cache.cross_attn is not None:
                raise ModuleError(f"GPT: expected DecoderCache({len(self.blocks)}) from new_cache(), got {cache!r}")
            offset = len(cache)
        x = self.drop(self.pos_emb(self.tok_emb(ids), offset))
        for i, block in enumerate(self.blocks):
            x = block(x, key_padding_mask=key_padding_mask, cache=None if cache is None else cache.self_attn[i])
        return self.head(self.ln_f(x))

    def generate(self, prompt_ids, max_new_tokens, *, eos_id=None, do_sample=False, temperature=1.0, top_k=0,
                 top_p=1.0, beam_size=1, length_penalty=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
                 seed=None, use_cache=True):
        """Continue ``prompt_ids`` (a 1-D sequence of token ids) by up to ``max_new_tokens`` tokens.

        Greedy by default; beam search with ``beam_size > 1`` or any of ``length_penalty``,
        ``repetition_penalty``, ``no_repeat_ngram_size``; sampling (``temperature``, ``top_k``,
        ``top_p``, ``seed``) with ``do_sample=True``. Stops early at ``eos_id`` unless it is None.
        Returns the new tokens only (a list of ints, ending with ``eos_id`` when it was produced).
        The penalties look at the generated tokens, not the prompt (nptransformer.decoding's
        convention). Runs in eval mode under no_grad, with a KV cache unless ``use_cache=False``.
        See nptransformer/decoding/generate.py.
        """
        from ..decoding.generate import generate_gpt  # decoding builds on nn: imported at call time

        return generate_gpt(self, prompt_ids, max_new_tokens, eos_id=eos_id, do_sample=do_sample,
                            temperature=temperature, top_k=top_k, top_p=top_p, beam_size=beam_size,
                            length_penalty=length_penalty, repetition_penalty=repetition_penalty,
                            no_repeat_ngram_size=no_repeat_ngram_size, seed=seed, use_cache=use_cache)


class BertEmbeddings(Module):
    """Token + position + segment (token type) embeddings, then LayerNorm and dropout."""

    def __init__(self, vocab_size, d_model, max_len, type_vocab_size, dropout, layer_norm_eps, pad_id, rng):
        super().__init__()
        self.word_embeddings = Embedding(vocab_size, d_model, padding_idx=pad_id, rng=rng, std=0.02)
        self.position_embeddings = Embedding(max_len, d_model, rng=rng, std=0.02)
        self.token_type_embeddings = Embedding(type_vocab_size, d_model, rng=rng, std=0.02)
        self.LayerNorm = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = Dropout(dropout, rng=rng)

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
                                        activation, layer_norm_eps, rng=rng)
        self.encoder = TransformerEncoder(layer, n_layers, rng=rng)
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


class _BertClassifier(Module):
    """BERT + dropout + a new linear head: the fine-tuning recipe of the source's §5.3. Keep the
    pre-trained ``bert`` and either freeze it (``model.bert.requires_grad_(False)``) or train all."""

    per_token = False  # classify every token (True) or the pooled [CLS] output (False)

    def __init__(self, bert: BERT, num_labels, dropout=0.1, rng=None):
        super().__init__()
        self.bert = bert
        self.dropout = Dropout(dropout, rng=rng)
        self.classifier = Linear(bert.d_model, num_labels, rng=rng)

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        sequence, pooled = self.bert(ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(sequence if self.per_token else pooled))


class BertForSequenceClassification(_BertClassifier):
    """BERT with a classifier on the pooled ``[CLS]`` output: logits (B, num_labels)."""


class BertForTokenClassification(_BertClassifier):
    """BERT with a classifier on every token: logits (B, T, num_labels)."""

    per_token = True
