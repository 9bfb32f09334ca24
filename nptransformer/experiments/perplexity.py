"""One table of perplexities: n-gram models, a neural n-gram and a GPT on the same sentences.

Two corpora, each with one tokenization shared by every model:

* ``grammar``: sentences sampled from ``english_grammar()``, whose entropy per token is known
  exactly (1.888 bits), so each model's bits per token can be set against the floor.
* ``docstrings``: the sentences of the Python standard library's docstrings, lower-cased and cut
  into words and punctuation marks by ``WordTokenizer.split``. Docstrings (not sentences) are
  split into training and test sets, so no docstring is in both. Words seen fewer than
  ``min_count`` times in the training sentences become ``<unk>`` in both sets, for every model:
  a word-level vocabulary, the same for all.

Every model is scored under ``NGramLM``'s convention (see nptransformer/lm/neural.py): each
sentence's words and its ``</s>`` are predicted, with the sentence's beginning as the only
history before its first word, and the perplexity is exp of the mean -log P per predicted token.
"""
from __future__ import annotations

import math
import re
import time

import numpy as np

from ..data import WordTokenizer, english_grammar, stdlib_docstrings
from ..lm import CausalSentenceLM, NeuralNGramLM, NGramLM, WordVocabulary
from ..lm.ngram import UNK
from ..nn import GPT, manual_seed
from .loop import fit, step_rng

GRAMMAR_DEFAULTS = {
    "train_sentences": 20000, "test_sentences": 2000, "orders": (1, 2, 3, 4), "discount": 0.75,
    "neural": {"n": 4, "embed_dim": 32, "hidden": 128, "steps": 3000, "batch_size": 256, "lr": 3e-3, "warmup": 100},
    "gpt": {"d_model": 64, "n_layers": 2, "n_heads": 4, "dropout": 0.0, "steps": 1500, "batch_size": 64,
            "lr": 3e-3, "warmup": 100},
}
DOCSTRINGS_DEFAULTS = {
    "min_count": 5, "test_fraction": 0.1, "max_tokens": 40, "orders": (1, 2, 3, 4), "discount": 0.75,
    "neural": {"n": 4, "embed_dim": 32, "hidden": 128, "steps": 3000, "batch_size": 128, "lr": 3e-3, "warmup": 100},
    "gpt": {"d_model": 64, "n_layers": 2, "n_heads": 4, "dropout": 0.1, "steps": 2500, "batch_size": 32,
            "lr": 3e-3, "warmup": 100},
}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ============================================================================ corpora
def grammar_corpus(train_sentences: int, test_sentences: int, seed: int = 0):
    """(training sentences, test sentences) sampled from ``english_grammar()``, as word lists
    without the grammar's ``</s>`` (the models add it, as NGramLM does)."""
    grammar = english_grammar()
    train = [s[:-1] for s in grammar.sample(train_sentences, seed=seed + 1)]
    test = [s[:-1] for s in grammar.sample(test_sentences, seed=seed + 2)]
    return train, test


def docstring_sentences(docstring: str, max_tokens: int) -> list[list[str]]:
    """The sentences of one docstring: paragraphs (split at blank lines) with their whitespace
    collapsed, cut after ``.``, ``!`` or ``?`` followed by a space, lower-cased and split into
    words and punctuation marks; sentences of fewer than 3 or more than ``max_tokens`` tokens are
    dropped."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        for text in _SENTENCE_END.split(" ".join(paragraph.split())):
            tokens = WordTokenizer.split(text.lower())
            if 3 <= len(tokens) <= max_tokens:
                sentences.append(tokens)
    return sentences


def docstring_corpus(min_count: int = 5, test_fraction: float = 0.1, max_tokens: int = 40, seed: int = 0,
                     limit: int | None = None):
    """(training sentences, test sentences) from the standard library's docstrings.

    The docstrings are shuffled with ``seed`` and the last ``test_fraction`` of them is the test
    set. Words seen fewer than ``min_count`` times in the training sentences are replaced by
    ``<unk>`` in both sets. ``limit`` reads only that many docstrings (for tests).
    """
    docs = stdlib_docstrings(limit=limit)
    order = np.random.default_rng(seed).permutation(len(docs))
    cut = len(docs) - max(1, round(len(docs) * test_fraction))
    train = [s for i in order[:cut] for s in docstring_sentences(docs[i], max_tokens)]
    test = [s for i in order[cut:] for s in docstring_sentences(docs[i], max_tokens)]
    counts = {}
    for s in train:
        for w in s:
            counts[w] = counts.get(w, 0) + 1
    known = {w for w, c in counts.items() if c >= min_count}
    return [[w if w in known else UNK for w in s] for s in train], [[w if w in known else UNK for w in s] for s in test]


# ============================================================================ models
def train_neural_ngram(train, vocab, n, embed_dim, hidden, steps, batch_size, lr, warmup, seed=0):
    """A NeuralNGramLM trained on every window of ``train``; returns (model, losses)."""
    model = NeuralNGramLM(vocab, n, embed_dim=embed_dim, hidden=hidden, rng=np.random.default_rng(seed))
    contexts, targets = model.windows(train)

    def batch(step):
        rows = step_rng(seed, step).integers(0, len(targets), batch_size)
        return contexts[rows], targets[rows]

    losses = fit(model, lambda m, b: m.loss(*b), batch, steps, lr, warmup)
    return model, losses


def train_gpt_lm(train, vocab, max_len, d_model, n_layers, n_heads, dropout, steps, batch_size, lr, warmup, seed=0):
    """A GPT with ``max_len`` positions trained on whole sentences of ``train`` (``<s> w1 .. wk``
    -> ``w1 .. wk </s>``); returns (CausalSentenceLM, losses)."""
    manual_seed(seed)
    gpt = GPT(vocab.num_ids, d_model, n_layers, n_heads, max_len=max_len, dropout=dropout,
              rng=np.random.default_rng(seed))
    lm = CausalSentenceLM(gpt, vocab)

    def batch(step):
        rows = step_rng(seed, step).integers(0, len(train), batch_size)
        return lm.batch([train[i] for i in rows])

    losses = fit(gpt, lambda m, b: lm.loss(*b), batch, steps, lr, warmup)
    return lm, losses


def _row(name, log_probs, count, seconds):
    nats = -float(np.sum(log_probs)) / count
    return {"model": name, "perplexity": math.exp(nats), "nats": nats, "bits": nats / math.log(2),
            "seconds": round(seconds, 2)}


def perplexity_rows(train, test, orders, discount, neural, gpt, seed=0, log=print) -> list[dict]:
    """Train every model on ``train`` and score it on ``test``: add-1 and Kneser-Ney n-grams for
    each order, the neural n-gram (``neural``: NeuralNGramLM and training settings) and the GPT
    (``gpt``: model and training settings). One dict per model; ``seconds`` is its training and
    scoring time."""
    vocab = WordVocabulary.from_sentences(train)
    count = sum(len(s) + 1 for s in test)
    rows = []

    def add(name, log_probs, start):
        rows.append(_row(name, log_probs, count, time.perf_counter() - start))
        log(f"  {name:>30}: perplexity {rows[-1]['perplexity']:9.3f}, {rows[-1]['bits']:.3f} bits/token")

    for smoothing, label in (("add-k", "add-1"), ("kneser-ney", "Kneser-Ney")):
        for n in orders:
            start = time.perf_counter()
            lm = NGramLM(n, smoothing=smoothing, k=1.0, discount=discount).fit(train)
            add(f"{label} {n}-gram", [lm.sentence_log_prob(s) for s in test], start)
    start = time.perf_counter()
    model, _ = train_neural_ngram(train, vocab, seed=seed, **neural)
    add(f"neural {neural['n']}-gram (Bengio 2003)", model.sentence_log_probs(test), start)
    start = time.perf_counter()
    longest = max(len(s) for s in train + test) + 1  # <s> and the words: every position the GPT reads
    lm, _ = train_gpt_lm(train, vocab, longest, seed=seed, **gpt)
    add(f"GPT ({gpt['n_layers']} layers, d={gpt['d_model']})", lm.sentence_log_probs(test), start)
    return rows


def _merged(defaults, overrides):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"perplexity_table: unknown setting {key!r}; known: {sorted(out)}")
        if isinstance(out[key], dict):
            unknown = set(value) - set(out[key])
            if unknown:
                raise ValueError(f"perplexity_table: unknown {key} settings {sorted(unknown)}; known: {sorted(out[key])}")
            out[key].update(value)
        else:
            out[key] = value
    return out


def perplexity_table(corpora=("grammar", "docstrings"), grammar=None, docstrings=None, seed: int = 0,
                     docstring_limit: int | None = None, log=print) -> dict:
    """The perplexity of every model on each corpus (see the module docstring).

    ``grammar`` and ``docstrings`` override entries of GRAMMAR_DEFAULTS and DOCSTRINGS_DEFAULTS
    (nested for "neural" and "gpt"); ``docstring_limit`` reads only that many docstrings. Returns
    ``{corpus: {"rows": [...], "vocabulary": V, "train_sentences", "test_sentences",
    "test_tokens", "seconds", "settings", ...}}``; the grammar adds its exact entropy and the
    grammar's own score on the test sentences (``entropy_*``, ``oracle_*``).
    """
    unknown = [c for c in corpora if c not in ("grammar", "docstrings")]
    if unknown or not corpora:
        raise ValueError(f"perplexity_table: unknown or no corpora {unknown}; expected 'grammar' and/or 'docstrings'")
    out = {}
    for corpus in corpora:
        start = time.perf_counter()
        if corpus == "grammar":
            settings = _merged(GRAMMAR_DEFAULTS, grammar)
            train, test = grammar_corpus(settings["train_sentences"], settings["test_sentences"], seed)
        else:
            settings = _merged(DOCSTRINGS_DEFAULTS, docstrings)
            train, test = docstring_corpus(settings["min_count"], settings["test_fraction"], settings["max_tokens"],
                                           seed, docstring_limit)
        log(f"{corpus}: {len(train)} training and {len(test)} test sentences")
        rows = perplexity_rows(train, test, settings["orders"], settings["discount"], settings["neural"],
                               settings["gpt"], seed, log)
        count = sum(len(s) + 1 for s in test)
        result = {"rows": rows, "vocabulary": len(WordVocabulary.from_sentences(train)), "train_sentences": len(train),
                  "test_sentences": len(test), "test_tokens": count,
                  "unk_rate": sum(w == UNK for s in test for w in s) / count, "settings": settings}
        if corpus == "grammar":
            g = english_grammar()
            oracle = -sum(g.log_prob(s + ["</s>"]) for s in test) / count
            result.update(entropy_nats=g.entropy_per_token("nats"), entropy_bits=g.entropy_per_token("bits"),
                          oracle_nats=oracle, oracle_bits=oracle / math.log(2))
        result["seconds"] = round(time.perf_counter() - start, 1)
        out[corpus] = result
    return out


def plot_perplexities(result: dict, path) -> None:
    """Bits per token of every model on each corpus (one panel per corpus; the grammar's panel
    shows its exact entropy, the floor), written to ``path`` as PNG."""
    from .plots import figure, save

    corpora = list(result)
    fig = figure(width=6.0 * len(corpora), height=4.2)
    for k, corpus in enumerate(corpora):
        ax = fig.add_subplot(1, len(corpora), k + 1)
        rows = result[corpus]["rows"]
        colors = ["tab:gray" if r["model"].startswith("add-1") else "tab:blue" if r["model"].startswith("Kneser")
                  else "tab:orange" if r["model"].startswith("neural") else "tab:green" for r in rows]
        ax.barh(range(len(rows)), [r["bits"] for r in rows], color=colors)
        ax.set_yticks(range(len(rows)), [r["model"] for r in rows])
        ax.invert_yaxis()
        for i, r in enumerate(rows):
            ax.text(r["bits"], i, f" {r['bits']:.3f}", va="center", fontsize=8)
        if "entropy_bits" in result[corpus]:
            ax.axvline(result[corpus]["entropy_bits"], color="k", ls="--",
                       label=f"entropy {result[corpus]['entropy_bits']:.3f} bits (the floor)")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("test bits per token (lower is better)")
        ax.set_title(f"{corpus}: {result[corpus]['test_tokens']} test tokens, V = {result[corpus]['vocabulary']}")
        ax.grid(axis="x", alpha=0.3)
    save(fig, path)


def perplexity_markdown(result: dict) -> str:
    """The tables of docs/experiments.md for a ``perplexity_table`` result."""
    out = []
    for corpus, r in result.items():
        grammar = "entropy_bits" in r
        out.append(f"**{corpus}**: {r['train_sentences']} training and {r['test_sentences']} test sentences, "
                   f"{r['test_tokens']} predicted test tokens, V = {r['vocabulary']} "
                   f"(<unk> is {100 * r['unk_rate']:.1f} % of the test tokens)\n")
        extra = " | above the entropy (bits)" if grammar else ""
        out.append(f"| model | perplexity | nats / token | bits / token{extra} | seconds |")
        out.append("|---|---:|---:|---:|" + ("---:|" if grammar else "") + "---:|")
        for row in r["rows"]:
            above = f" | {row['bits'] - r['entropy_bits']:+.3f}" if grammar else ""
            out.append(f"| {row['model']} | {row['perplexity']:.3f} | {row['nats']:.4f} | {row['bits']:.4f}{above} "
                       f"| {row['seconds']:.1f} |")
        if grammar:
            out.append(f"| the grammar itself, on these test sentences | {math.exp(r['oracle_nats']):.3f} | "
                       f"{r['oracle_nats']:.4f} | {r['oracle_bits']:.4f} | {r['oracle_bits'] - r['entropy_bits']:+.3f} | |")
            out.append(f"| entropy per token (exact) | {math.exp(r['entropy_nats']):.3f} | {r['entropy_nats']:.4f} | "
                       f"{r['entropy_bits']:.4f} | 0 | |")
        out.append("")
    return "\n".join(out)
