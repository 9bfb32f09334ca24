"""nptransformer.decoding: turning next-token log-probabilities into sequences.

Greedy, exhaustive and beam search (with length, repetition and n-gram penalties) and sampling
(temperature, top-k, top-p), all on a plain scorer ``log_prob_fn(prefixes) -> (n, V)``, so they
run and are tested without a model. Returned token lists exclude BOS and end with EOS when it
was produced. See docs/decoding.md.
"""
from .search import (
    LENGTH_PENALTY_STYLES,
    apply_repetition_penalty,
    banned_ngram_tokens,
    beam_search,
    beam_search_batch,
    exhaustive_search,
    greedy_search,
    length_normalizer,
    sample,
    top_k_top_p_filter,
)

__all__ = [
    "LENGTH_PENALTY_STYLES",
    "apply_repetition_penalty",
    "banned_ngram_tokens",
    "beam_search",
    "beam_search_batch",
    "exhaustive_search",
    "greedy_search",
    "length_normalizer",
    "sample",
    "top_k_top_p_filter",
]

# Generation from models (GPT, Seq2SeqTransformer), with or without a KV cache: decoding/generate.py.
from .generate import GPTScorer, Seq2SeqScorer, generate_gpt, generate_seq2seq

__all__ += ["GPTScorer", "Seq2SeqScorer", "generate_gpt", "generate_seq2seq"]
