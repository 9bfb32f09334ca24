"""Generation from models: the searches of search.py served by a GPT or a Seq2SeqTransformer.

The searches reach a model through one function, the scorer ``log_prob_fn(prefixes[, sources])``
(see search.py). The scorers here answer it from a model, in one of two ways that give the same
log-probabilities (the tests hold them within 1e-6):

* without a cache, every call runs the model on every whole prefix. Step t costs t positions per
  prefix, and a whole generation of N tokens about N²/2.
* with a KV cache (nptransformer.nn.KVCache), every call runs the model on the LAST token of each
  prefix only. The searches call the scorer once per step, and each prefix of a call extends a
  prefix of the previous call by one token. So the scorer remembers which cache row scored which
  prefix last time, finds each new prefix's parent (the prefix without its last token, of the same
  source), gathers the parents' rows into the new order (beam search drops, reorders and repeats
  hypotheses), and appends the new token. A call whose prefixes do not all extend the previous
  call's (the first call, or a new search) runs the whole prefixes through a fresh cache.

``generate_gpt`` and ``generate_seq2seq`` are what ``GPT.generate`` and
``Seq2SeqTransformer.generate`` call: they check the arguments, build a scorer and pick the search.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import get_array_module, to_device
from ..nn.module import eval_mode
from .search import beam_search, beam_search_batch, greedy_search, sample


class _ModelScorer:
    """A search's ``log_prob_fn`` answered by a model; subclasses say how prefixes become model
    input (``_tokens``) and how the model runs (``_forward``). See the module docstring.

    Returns an (n, V) array of log-probabilities in the model's dtype, on its device. All the
    prefixes of one call must have the same length (the searches' calls do).
    """

    def __init__(self, model, use_cache):
        self.model, self.use_cache = model, bool(use_cache)
        self.xp = get_array_module(next(iter(model.parameters())).data)
        self.cache = None  # the previous call's cache, one row per prefix of that call
        self.rows = {}  # (source, prefix) of the previous call -> its row in self.cache
        self.n_rows = 0  # the rows in self.cache

    def __call__(self, prefixes, sources=None):
        name = type(self).__name__
        n = len(prefixes)
        sources = [0] * n if sources is None else [int(s) for s in sources]
        keys = [(s, tuple(map(int, p))) for s, p in zip(sources, prefixes)]
        if n == 0 or len(sources) != n or len({len(p) for _, p in keys}) != 1 or not keys[0][1]:
            raise ValueError(
                f"{name}: expected one or more non-empty prefixes of one length and one source per prefix, got "
                f"{n} prefixes of lengths {sorted({len(p) for _, p in keys})} and {len(sources)} sources"
            )
        parents = [self.rows.get((s, p[:-1])) for s, p in keys]  # rows of the previous call's cache
        if self.use_cache and None not in parents:
            cache = self.cache if parents == list(range(self.n_rows)) else self.cache.select(parents)
            ids = [[p[-1]] for _, p in keys]  # only the new token: the cache holds the rest
        else:  # no cache, or not every prefix extends one of the previous call: whole prefixes
            cache = self.model.new_cache() if self.use_cache else None
            ids = [self._tokens(p) for _, p in keys]
        with no_grad():
            logits = self._forward(self.xp.asarray(np.array(ids, dtype=np.int64)), sources, cache)  # (n, T, V)
            log_probs = F.log_softmax(logits.data[:, -1], axis=-1).data  # the last position: (n, T, V) -> (n, V)
        if self.use_cache:
            self.cache, self.rows, self.n_rows = cache, {key: row for row, key in enumerate(keys)}, n
        return log_probs


class GPTScorer(_ModelScorer):
    """The scorer of a GPT continuing ``prompt``: the prompt stands where the searches put BOS, so
    prefix ``[bos, t1, ..., tk]`` is scored as ``prompt + [t1, ..., tk]``."""

    def __init__(self, model, prompt, use_cache=True):
        super().__init__(model, use_cache)
        self.prompt = [int(t) for t in prompt]
        if not self.prompt:
            raise ValueError("GPTScorer: the prompt must hold at least one token (the model predicts from it)")

    def _tokens(self, prefix):
        return self.prompt + list(prefix[1:])

    def _forward(self, ids, sources, cache):
        return self.model(ids, cache=cache)


class Seq2SeqScorer(_ModelScorer):
    """The scorer of a Seq2SeqTransformer for the rows of ``src_ids`` (B, S): encoded once here;
    prefix i is decoded against source ``sources[i]`` (source 0 when the search passes none)."""

    def __init__(self, model, src_ids, use_cache=True):
        super().__init__(model, use_cache)
        src = self.xp.asarray(src_ids)
        self.n_sources = src.shape[0]
        self.memory_padding = model.padding_mask(src)  # (B, S) or None
        with no_grad():
            self.memory = model.encode(src, self.memory_padding).data  # (B, S, C)

    def _tokens(self, prefix):
        return list(prefix)

    def _forward(self, ids, sources, cache):
        if cache is not None and len(cache):  # the cache already holds the memory's keys and values
            return self.model.decode(ids, None, cache=cache)
        if min(sources) < 0 or max(sources) >= self.n_sources:
            raise ValueError(f"Seq2SeqScorer: sources must lie in [0, {self.n_sources}), got {sorted(set(sources))}")
        rows = self.xp.asarray(np.array(sources, dtype=np.int64))
        memory = Tensor(self.xp.take(self.memory, rows, axis=0))  # (B, S, C) -> (n, S, C)
        padding = None if self.memory_padding is None else self.xp.take(self.memory_padding, rows, axis=0)
        return self.model.decode(ids, memory, memory_key_padding_mask=padding, cache=cache)


def _never_eos(log_prob_fn):
    """``log_prob_fn`` with one more column, of log-probability -inf: an EOS id (V) the model can
    never produce, so a search given it runs to its length limit."""

    def scorer(prefixes):
        log_probs = log_prob_fn(prefixes)  # (n, V)
        xp = get_array_module(log_probs)
        never = xp.full((log_probs.shape[0], 1), -np.inf, dtype=log_probs.dtype)
        return xp.concatenate([log_probs, never], axis=1)  # (n, V + 1)

    return scorer


def _int(fn, name, value, low, high=None):
    """``value`` as an int in [low, high), or a ValueError naming ``fn``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{fn}: {name} must be an int {bound}, got {value!r}")
    return int(value)


def _host_ids(fn, name, ids, ndim, vocab_size):
    """Token ids (a sequence, a NumPy/CuPy array or a Tensor) as a NumPy int array with ``ndim`` axes."""
    data = ids.data if isinstance(ids, Tensor) else ids
    shape = "(T,)" if ndim == 1 else "(B, S)"
    try:
        array = np.asarray(to_device(data, "cpu") if hasattr(data, "__array_namespace__") else data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{fn}: {name} must be an integer array of shape {shape} ({exc})") from None
    if array.ndim != ndim or array.dtype.kind not in "iu" or array.size == 0:
        raise ValueError(
            f"{fn}: {name} must be a non-empty integer array of shape {shape}, got shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    if array.min() < 0 or array.max() >= vocab_size:
        raise ValueError(f"{fn}: {name} must lie in [0, {vocab_size}) (the vocabulary), got values "
                         f"from {array.min()} to {array.max()}")
    return array.astype(np.int64)


def generate_gpt(model, prompt_ids, max_new_tokens, *, eos_id=None, do_sample=False, temperature=1.0, top_k=0,
                 top_p=1.0, beam_size=1, length_penalty=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
                 seed=None, use_cache=True):
    """What ``GPT.generate`` does (its docstring has the arguments): greedy_search, beam_search or
    sample on a GPTScorer. Returns the new tokens as a list of ints."""
    fn = "GPT.generate"
    prompt = _host_ids(fn, "prompt_ids", prompt_ids, 1, model.vocab_size)
    max_new_tokens = _int(fn, "max_new_tokens", max_new_tokens, 1)
    if len(prompt) + max_new_tokens - 1 > model.max_len:
        raise ValueError(
            f"{fn}: a prompt of {len(prompt)} tokens and max_new_tokens={max_new_tokens} need "
            f"{len(prompt) + max_new_tokens - 1} positions, but the model has max_len={model.max_len}"
        )
    if eos_id is not None:
        eos_id = _int(fn, "eos_id", eos_id, 0, model.vocab_size)
    sampling = {"temperature": (temperature, 1.0), "top_k": (top_k, 0), "top_p": (top_p, 1.0), "seed": (seed, None)}
    search = {"beam_size": (beam_size, 1), "length_penalty": (length_penalty, 0.0),
              "repetition_penalty": (repetition_penalty, 1.0), "no_repeat_ngram_size": (no_repeat_ngram_size, 0)}
    unused = [k for k, (v, default) in (search if do_sample else sampling).items() if v != default]
    if unused:
        if do_sample:
            mode = "do_sample=True: sample() takes no beam or penalties"
        else:
            mode = "do_sample=False; they need do_sample=True"
        raise ValueError(f"{fn}: {', '.join(unused)} cannot be used with {mode}")

    scorer = GPTScorer(model, prompt, use_cache)
    if eos_id is None:
        scorer, eos_id = _never_eos(scorer), model.vocab_size
    bos_id = 0  # a placeholder: the scorer puts the prompt in its place
    with eval_mode(model):
        if do_sample:
            return sample(scorer, bos_id, eos_id, max_new_tokens, temperature, top_k, top_p, seed)
        if all(v == default for v, default in search.values()):
            return greedy_search(scorer, bos_id, eos_id, max_new_tokens)
        return beam_search(scorer, bos_id, eos_id, beam_size, max_new_tokens, length_penalty, "hf",
                           repetition_penalty, no_repeat_ngram_size)[0][0]


def generate_seq2seq(model, src_ids, bos_id, eos_id, max_len, *, beam_size=1, length_penalty=0.0,
                     length_penalty_style="hf", repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True):
    """What ``Seq2SeqTransformer.generate`` does: beam_search_batch on a Seq2SeqScorer over every
    source row at once. Returns one token list per source."""
    fn = "Seq2SeqTransformer.generate"
    src = _host_ids(fn, "src_ids", src_ids, 2, model.src_tok_emb.num_embeddings)
    if src.shape[1] > model.max_len:
        raise ValueError(f"{fn}: sources of length {src.shape[1]} exceed the model's max_len={model.max_len}")
    vocab_size = model.tgt_tok_emb.num_embeddings
    bos_id = _int(fn, "bos_id", bos_id, 0, vocab_size)
    eos_id = _int(fn, "eos_id", eos_id, 0, vocab_size)
    max_len = _int(fn, "max_len", max_len, 1)
    if max_len > model.max_len:
        raise ValueError(
            f"{fn}: max_len={max_len} tokens need {max_len} decoder positions (BOS and all but the last "
            f"token), but the model has max_len={model.max_len}"
        )
    with eval_mode(model):
        scorer = Seq2SeqScorer(model, src, use_cache)
        results = beam_search_batch(scorer, src.shape[0], bos_id, eos_id, beam_size, max_len, length_penalty,
                                    length_penalty_style, repetition_penalty, no_repeat_ngram_size)
    return [hyps[0][0] for hyps in results]
