"""Decoding on plain scorers: beam search against full enumeration, greedy and sampling against
their definitions, the penalties against hand-computed examples (the ones in docs/decoding.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nptransformer.decoding import (
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

V, EOS, BOS, MAX_LEN = 5, 4, 0, 4


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def random_scorer(seed, vocab_size=V, sharpness=1.5):
    """Next-token log-probs drawn from an rng seeded by the whole prefix: depends on every token."""

    def log_prob_fn(prefixes):
        rows = [np.random.default_rng([seed, len(p), *p]).standard_normal(vocab_size) for p in prefixes]
        return log_softmax(sharpness * np.array(rows))

    return log_prob_fn


class Recorder:
    """Wraps a scorer and remembers every call's prefixes."""

    def __init__(self, log_prob_fn):
        self.log_prob_fn = log_prob_fn
        self.calls = []

    def __call__(self, prefixes, *extra):
        self.calls.append([list(p) for p in prefixes])
        return self.log_prob_fn(prefixes, *extra)


def brute_force(log_prob_fn, alpha, style, max_len=MAX_LEN):
    """Every complete hypothesis with its score, one prefix at a time: independent of the module."""
    def denominator(n):
        return ((5 + n) / 6) ** alpha if style == "gnmt" else n ** alpha

    scored = []

    def walk(tokens, total):
        row = log_prob_fn([[BOS, *tokens]])[0]
        for token in range(len(row)):
            if style == "fairseq" and len(tokens) + 1 == max_len and token != EOS:
                continue  # fairseq allows only EOS at the length limit
            t, s = [*tokens, token], total + row[token]
            if token == EOS or len(t) == max_len:
                scored.append((t, s / denominator(len(t))))
            else:
                walk(t, s)

    walk([], 0.0)
    return sorted(scored, key=lambda ts: -ts[1])


ALPHAS = [("hf", 0.0), ("hf", 1.0), ("gnmt", 0.6), ("gnmt", 2.0), ("fairseq", 1.0)]


# --------------------------------------------------------------------------- exhaustive / beam
@pytest.mark.parametrize("style,alpha", ALPHAS)
def test_exhaustive_matches_brute_force(style, alpha):
    for seed in range(4):
        scorer = random_scorer(seed)
        expected_tokens, expected_score = brute_force(scorer, alpha, style)[0]
        tokens, score = exhaustive_search(scorer, BOS, EOS, MAX_LEN, alpha, style)
        assert tokens == expected_tokens
        assert score == pytest.approx(expected_score, abs=1e-12)


@pytest.mark.parametrize("style,alpha", ALPHAS)
def test_wide_beam_equals_exhaustive(style, alpha):
    wide = V ** MAX_LEN  # more than all prefixes of all lengths: nothing is ever pruned
    for seed in range(12):
        scorer = random_scorer(seed)
        tokens, score = exhaustive_search(scorer, BOS, EOS, MAX_LEN, alpha, style)
        ((beam_tokens, beam_score),) = beam_search(scorer, BOS, EOS, wide, MAX_LEN, alpha, style)
        assert beam_tokens == tokens
        assert beam_score == pytest.approx(score, abs=1e-12)


def test_wide_beam_n_best_is_the_top_of_the_enumeration():
    scorer = random_scorer(3)
    expected = brute_force(scorer, 1.0, "hf")[:10]
    got = beam_search(scorer, BOS, EOS, V ** MAX_LEN, MAX_LEN, 1.0, "hf", n_best=10)
    assert [t for t, _ in got] == [t for t, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-12)


def test_length_penalty_changes_the_winner_somewhere():
    winners = [
        (exhaustive_search(random_scorer(seed), BOS, EOS, MAX_LEN, 0.0)[0],
         exhaustive_search(random_scorer(seed), BOS, EOS, MAX_LEN, 2.0)[0])
        for seed in range(12)
    ]
    assert any(a != b for a, b in winners)
    # provably, alpha > 0 never picks a shorter winner: a longer alpha=0 winner has the smaller
    # |sum| and the larger divisor, so it would win with alpha > 0 as well
    assert all(len(a) <= len(b) for a, b in winners)


@pytest.mark.parametrize("penalties", [dict(repetition_penalty=1.7), dict(no_repeat_ngram_size=2),
                                       dict(repetition_penalty=0.6, no_repeat_ngram_size=1)])
def test_wide_beam_equals_exhaustive_with_penalties(penalties):
    for seed in range(6):
        scorer = random_scorer(seed)
        tokens, score = exhaustive_search(scorer, BOS, EOS, MAX_LEN, 1.0, "hf", **penalties)
        ((beam_tokens, beam_score),) = beam_search(scorer, BOS, EOS, V ** MAX_LEN, MAX_LEN, 1.0, "hf", **penalties)
        assert (beam_tokens, beam_score) == (tokens, pytest.approx(score, abs=1e-12))


def test_beam_size_one_is_greedy():
    for seed in range(20):
        scorer = random_scorer(seed, sharpness=1.0)
        greedy = greedy_search(scorer, BOS, EOS, 8)
        for early_stopping in (False, True):
            ((tokens, _),) = beam_search(scorer, BOS, EOS, 1, 8, early_stopping=early_stopping)
            assert tokens == greedy
        # with a length penalty only early stopping keeps it greedy: the exact bound searches on;
        # fairseq's style also forces EOS as the last token when greedy hit the limit without it
        for style, alpha in ALPHAS:
            ((tokens, _),) = beam_search(scorer, BOS, EOS, 1, 8, alpha, style, early_stopping=True)
            if style == "fairseq" and greedy[-1] != EOS:
                assert tokens == [*greedy[:-1], EOS]
            else:
                assert tokens == greedy


def test_greedy_stops_at_eos_and_at_max_len():
    always_eos = lambda prefixes: log_softmax(np.tile([0.0, 0.0, 0.0, 0.0, 5.0], (len(prefixes), 1)))
    assert greedy_search(always_eos, BOS, EOS, 6) == [EOS]
    never_eos = lambda prefixes: log_softmax(np.tile([0.0, 0.0, 3.0, 0.0, -5.0], (len(prefixes), 1)))
    assert greedy_search(never_eos, BOS, EOS, 6) == [2] * 6


def test_fairseq_style_ends_every_hypothesis_with_eos():
    scorer = random_scorer(5)
    for tokens, score in beam_search(scorer, BOS, EOS, 4, 3, 1.0, "fairseq", n_best=4):
        assert tokens[-1] == EOS and len(tokens) <= 3
        assert score == pytest.approx(_sequence_log_prob(scorer, tokens) / len(tokens), abs=1e-12)


def _sequence_log_prob(scorer, tokens):
    return sum(scorer([[BOS, *tokens[:i]]])[0][t] for i, t in enumerate(tokens))


def test_scores_are_normalized_sums_of_log_probs():
    scorer = random_scorer(7)
    for style, alpha in ALPHAS:
        for tokens, score in beam_search(scorer, BOS, EOS, 3, 5, alpha, style, n_best=3):
            assert score == pytest.approx(_sequence_log_prob(scorer, tokens) / length_normalizer(len(tokens), alpha, style))


def test_n_best_sorted_and_distinct():
    result = beam_search(random_scorer(2), BOS, EOS, 4, 6, 0.5, n_best=4)
    assert len(result) == 4
    scores = [s for _, s in result]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(t) for t, _ in result}) == 4


def test_length_normalizer_values():
    assert length_normalizer(4, 1.0, "hf") == 4.0
    assert length_normalizer(4, 0.6, "gnmt") == pytest.approx((9 / 6) ** 0.6)
    assert length_normalizer(3, 2.0, "fairseq") == 9.0
    assert all(length_normalizer(7, 0.0, s) == 1.0 for s in ("hf", "gnmt", "fairseq"))
    assert length_normalizer(1, 5.0, "gnmt") == 1.0  # GNMT's penalty is 1 for a single token


def test_eos_ranked_below_the_beam_is_dropped():
    # beam_size 2, step 2 ranks: "0 EOS" .30 (finished), "0 2" .175 (kept), "1 EOS" .16 (rank 2:
    # dropped, as HF and fairseq drop EOS candidates ranked below beam_size), "1 1" .12 (kept).
    # So "1 EOS", the second most probable sequence overall, is missed: a search error.
    table = {(): [0.5, 0.4, 0.04, 0.03, 0.03], (0,): [0.01, 0.01, 0.35, 0.03, 0.6], (1,): [0.1, 0.3, 0.1, 0.1, 0.4]}
    scorer = lambda prefixes: np.log([table.get(tuple(p[1:]), [0.2] * 5) for p in prefixes])
    result = beam_search(scorer, BOS, EOS, 2, 3, n_best=2)
    assert result == [([0, EOS], pytest.approx(math.log(0.3))), ([0, 2, 0], pytest.approx(math.log(0.035)))]
    assert brute_force(scorer, 0.0, "hf", max_len=3)[1] == ([1, EOS], pytest.approx(math.log(0.16)))


def test_early_stopping_true_can_stop_before_the_best():
    # Step 1: EOS (p=0.5) outranks token 1 (p=0.45), so it is finished first. With a length
    # penalty, "1 EOS" is better (log(0.45 * 0.99) / 2 = -0.40 > log(0.5) / 1 = -0.69).
    table = {(): [0.01, 0.45, 0.02, 0.02, 0.5], (1,): [0.0025, 0.0025, 0.0025, 0.0025, 0.99]}
    scorer = lambda prefixes: np.log([table.get(tuple(p[1:]), [0.2] * 5) for p in prefixes])
    ((early, early_score),) = beam_search(scorer, BOS, EOS, 1, 3, 1.0, early_stopping=True)
    ((exact, exact_score),) = beam_search(scorer, BOS, EOS, 1, 3, 1.0, early_stopping=False)
    assert (early, early_score) == ([EOS], pytest.approx(math.log(0.5)))
    assert (exact, exact_score) == ([1, EOS], pytest.approx(math.log(0.45 * 0.99) / 2))
    assert exhaustive_search(scorer, BOS, EOS, 3, 1.0)[0] == exact


def reference_beam(log_prob_fn, beam_size, max_len, alpha, n_best):
    """Beam search by the same ranking rules but never stopping early and keeping every finished
    hypothesis: what early_stopping=False must reproduce (hf style, no penalties)."""
    beams, finished = [([], 0.0)], []
    for step in range(1, max_len + 1):
        rows = log_prob_fn([[BOS, *tokens] for tokens, _ in beams])
        candidates = sorted(((total + row[t], i, t) for i, ((_, total), row) in enumerate(zip(beams, rows))
                             for t in range(len(row))), key=lambda c: -c[0])
        next_beams = []
        for rank, (total, i, t) in enumerate(candidates):
            tokens = [*beams[i][0], t]
            if t == EOS:
                if rank < beam_size:
                    finished.append((tokens, total / step ** alpha))
                continue
            if step == max_len:
                finished.append((tokens, total / step ** alpha))
            next_beams.append((tokens, total))
            if len(next_beams) == beam_size:
                break
        beams = next_beams
    return sorted(finished, key=lambda ts: -ts[1])[:n_best]


def test_early_stopping_false_is_exact_for_narrow_beams():
    """The stopping bound only skips steps that cannot change the n-best list."""
    stopped_early = 0
    for seed in range(10):
        for alpha in (0.0, 1.0, 3.0):
            recorder = Recorder(random_scorer(seed, sharpness=2.5))
            result = beam_search(recorder, BOS, EOS, 2, 9, alpha, n_best=2)
            expected = reference_beam(random_scorer(seed, sharpness=2.5), 2, 9, alpha, 2)
            assert [t for t, _ in result] == [t for t, _ in expected]
            np.testing.assert_allclose([s for _, s in result], [s for _, s in expected], atol=1e-12)
            stopped_early += len(recorder.calls) < 9
    assert stopped_early > 5  # the bound does stop searches early, not only at max_len


def test_batch_makes_one_call_per_step_and_matches_single_runs():
    def batched(prefixes, sources):
        return np.concatenate([random_scorer(10 + s)([p]) for p, s in zip(prefixes, sources)])

    recorder = Recorder(batched)
    results = beam_search_batch(recorder, 3, BOS, EOS, 3, 6, 1.0, n_best=2)
    assert len(recorder.calls) <= 6
    assert len(recorder.calls[0]) == 3  # all three sources in the first call
    for source, result in enumerate(results):
        assert result == beam_search(random_scorer(10 + source), BOS, EOS, 3, 6, 1.0, n_best=2)


def test_beam_calls_scorer_once_per_step_with_all_beams():
    recorder = Recorder(lambda p: random_scorer(4)(p))
    beam_search(recorder, BOS, EOS, 3, 5, early_stopping=True)
    assert all(len(prefixes) <= 3 for prefixes in recorder.calls)
    assert all(p[0] == BOS and len(p) == step + 1 for step, prefixes in enumerate(recorder.calls) for p in prefixes)


# --------------------------------------------------------------------------- penalties
def test_repetition_penalty_worked_example():
    out = apply_repetition_penalty([2, -1, 0.5, 3], [0, 1, 1], 2)
    np.testing.assert_array_equal(out, [1, -2, 0.5, 3])


def test_repetition_penalty_once_per_token_rows_and_no_mutation():
    logits = np.array([[2.0, -1.0, 0.0], [4.0, 1.0, -3.0]], dtype=np.float32)
    out = apply_repetition_penalty(logits, [[0, 0, 0, 2], [1]], 4.0)
    np.testing.assert_array_equal(out, [[0.5, -1.0, 0.0], [4.0, 0.25, -3.0]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(logits, [[2.0, -1.0, 0.0], [4.0, 1.0, -3.0]])
    # on log-probabilities a penalty theta turns p into p ** theta (before re-normalizing)
    np.testing.assert_allclose(np.exp(apply_repetition_penalty(np.log([0.1, 0.2, 0.7]), [1], 2)), [0.1, 0.04, 0.7])


def test_banned_ngram_tokens_hand_examples():
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]  # (1, 2) was followed by 3
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 2) == [3]  # 2 was followed by 3
    assert banned_ngram_tokens([1, 2, 1, 3, 1], 2) == [2, 3]  # 1 was followed by 2 and by 3
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 1) == [1, 2, 3]  # unigrams: every token seen
    assert banned_ngram_tokens([1, 2, 3, 2, 1], 3) == []  # (2, 1) never seen before
    assert banned_ngram_tokens([1, 1, 1], 2) == [1]
    assert banned_ngram_tokens([1], 3) == []  # too short to repeat a trigram
    assert banned_ngram_tokens([1, 2, 1, 2], 0) == []


def _ngrams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def test_no_repeat_ngram_blocks_repeats_in_beam_output():
    # a scorer that loves token 1 and rarely ends: without blocking, beams repeat 1 1 1 ...
    loves_one = lambda prefixes: log_softmax(np.tile([0.0, 4.0, 1.0, 0.5, -3.0], (len(prefixes), 1)))
    assert beam_search(loves_one, BOS, EOS, 3, 8)[0][0] == [1] * 8
    for n in (1, 2, 3):
        for tokens, _ in beam_search(loves_one, BOS, EOS, 3, 8, no_repeat_ngram_size=n, n_best=3):
            grams = _ngrams(tokens, n)
            assert len(grams) == len(set(grams)), (n, tokens)


# --------------------------------------------------------------------------- the docs/decoding.md example
A, B, END = 0, 1, 2  # vocabulary {a, b, EOS}; BOS is the EOS id, as in fairseq
DOC_TABLE = {(): [.5, .4, .1], (A,): [.3, .15, .55], (B,): [.04, .9, .06], (A, A): [.5, .3, .2],
             (A, B): [.1, .1, .8], (B, A): [.2, .3, .5], (B, B): [.1, .2, .7]}


def doc_scorer(prefixes):
    return np.log([DOC_TABLE[tuple(p[1:])] for p in prefixes])


def test_doc_example_beam_tree():
    recorder = Recorder(doc_scorer)
    result = beam_search(recorder, END, END, 2, 3, n_best=2)
    assert [sorted(tuple(p[1:]) for p in call) for call in recorder.calls] == [[()], [(A,), (B,)], [(A, A), (B, B)]]
    assert result == [([A, END], pytest.approx(math.log(.275))), ([B, B, END], pytest.approx(math.log(.252)))]
    assert greedy_search(doc_scorer, END, END, 3) == [A, END]


@pytest.mark.parametrize("style,alpha,winner,score", [
    ("hf", 0.0, [A, END], math.log(.275)),
    ("hf", 1.0, [B, B, END], math.log(.252) / 3),
    ("gnmt", 1.0, [B, B, END], math.log(.252) / (8 / 6)),
    ("gnmt", 0.6, [B, B, END], math.log(.252) / (8 / 6) ** 0.6),
    ("fairseq", 1.0, [B, B, END], math.log(.252) / 3),
])
def test_doc_example_length_penalties(style, alpha, winner, score):
    assert beam_search(doc_scorer, END, END, 2, 3, alpha, style)[0] == (winner, pytest.approx(score))


def test_doc_example_fairseq_forces_eos_at_the_limit():
    # a strong length preference (alpha = 3) puts two length-3 hypotheses on top; under "hf" the
    # second is "a a a", cut by the limit; fairseq allows only EOS at step 3, so it is "a a EOS"
    hf = beam_search(doc_scorer, END, END, 2, 3, 3.0, "hf", n_best=2)
    fairseq = beam_search(doc_scorer, END, END, 2, 3, 3.0, "fairseq", n_best=2)
    assert hf == [([B, B, END], pytest.approx(math.log(.252) / 27)), ([A, A, A], pytest.approx(math.log(.075) / 27))]
    assert fairseq == [([B, B, END], pytest.approx(math.log(.252) / 27)), ([A, A, END], pytest.approx(math.log(.03) / 27))]


def test_doc_example_penalties():
    # repetition penalty 2: "a" after "a" drops from .3 to .09/.79; "b" after "b" from .9 to .81/.91
    result = beam_search(doc_scorer, END, END, 2, 3, repetition_penalty=2.0, n_best=2)
    assert result == [([A, END], pytest.approx(math.log(.5 * .55 / .79))),
                      ([B, B, END], pytest.approx(math.log(.4 * (.81 / .91) * (.7 / .84))))]
    # bigram blocking bans "b" after "b b": EOS gets .7 / .8 of the re-normalized row
    result = beam_search(doc_scorer, END, END, 2, 3, no_repeat_ngram_size=2)
    assert result == [([B, B, END], pytest.approx(math.log(.36 * .7 / .8)))]


# --------------------------------------------------------------------------- sampling
def test_top_k_one_sampling_is_greedy():
    for seed in range(10):
        scorer = random_scorer(seed, sharpness=1.0)
        assert sample(scorer, BOS, EOS, 8, top_k=1, seed=seed) == greedy_search(scorer, BOS, EOS, 8)
        assert sample(scorer, BOS, EOS, 8, temperature=0.3, top_k=1, seed=seed) == greedy_search(scorer, BOS, EOS, 8)


def test_sampling_is_reproducible_with_a_seed():
    scorer = random_scorer(1, sharpness=0.5)
    assert sample(scorer, BOS, EOS, 10, seed=3) == sample(scorer, BOS, EOS, 10, seed=3)
    draws = {tuple(sample(scorer, BOS, EOS, 10, seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_top_k_top_p_filter_hand_examples():
    p = np.log([0.5, 0.25, 0.15, 0.07, 0.03])
    kept = lambda row: np.isfinite(row).tolist()
    assert kept(top_k_top_p_filter(p, top_p=0.8)) == [True, True, True, False, False]  # .5+.25 < .8 <= .9
    assert kept(top_k_top_p_filter(p, top_p=0.76)) == [True, True, True, False, False]  # .75 < .76: one more
    assert kept(top_k_top_p_filter(p, top_p=0.74)) == [True, True, False, False, False]  # .5+.25 >= .74
    assert kept(top_k_top_p_filter(p, top_p=0.3)) == [True, False, False, False, False]  # always >= 1 token
    assert kept(top_k_top_p_filter(p, top_k=2)) == [True, True, False, False, False]
    assert kept(top_k_top_p_filter(p[::-1], top_k=2, top_p=0.5)) == [False, False, False, False, True]
    assert kept(top_k_top_p_filter(p, top_k=0, top_p=1.0)) == [True] * 5
    np.testing.assert_array_equal(top_k_top_p_filter(p, top_p=0.8)[:3], p[:3])  # kept entries unchanged
    # exactly at the boundary (binary fractions, so the sums are exact): the set that reaches
    # top_p is complete, the next token is dropped, as in HF (remove where ascending cumsum <= 1 - p)
    exact = np.log([0.5, 0.25, 0.125, 0.125])
    assert kept(top_k_top_p_filter(exact, top_p=0.75)) == [True, True, False, False]
    assert kept(top_k_top_p_filter(exact, top_p=0.5)) == [True, False, False, False]


P_FIRST = np.array([0.5, 0.25, 0.15, 0.07, 0.03])


@pytest.mark.parametrize("options,expected", [
    (dict(), P_FIRST),
    (dict(temperature=2.0), np.sqrt(P_FIRST) / np.sqrt(P_FIRST).sum()),
    (dict(top_p=0.8), np.array([0.5, 0.25, 0.15, 0, 0]) / 0.9),
    (dict(top_k=2, temperature=0.5), np.array([0.25, 0.0625, 0, 0, 0]) / 0.3125),
])
def test_sampling_frequencies(options, expected):
    """First-token frequencies over N draws are within 5 standard errors of the expected
    distribution (a false alarm has probability < 1e-5 per token), and removed tokens never appear."""
    scorer = lambda prefixes: np.log(np.tile(P_FIRST, (len(prefixes), 1)))
    rng = np.random.default_rng(1234)
    n = 8000
    counts = np.bincount([sample(scorer, BOS, EOS, 1, seed=rng, **options)[0] for _ in range(n)], minlength=V)
    standard_error = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts / n - expected) <= 5 * standard_error + 1e-12), (counts / n, expected)
    assert np.all(counts[expected == 0] == 0)


# --------------------------------------------------------------------------- bad input
def _all_searches():
    return {
        "greedy_search": lambda f, **kw: greedy_search(f, BOS, kw.get("eos", EOS), kw.get("max_len", 3)),
        "exhaustive_search": lambda f, **kw: exhaustive_search(f, BOS, kw.get("eos", EOS), kw.get("max_len", 3)),
        "beam_search": lambda f, **kw: beam_search(f, BOS, kw.get("eos", EOS), 2, kw.get("max_len", 3)),
        "sample": lambda f, **kw: sample(f, BOS, kw.get("eos", EOS), kw.get("max_len", 3), seed=0),
    }


@pytest.mark.parametrize("name", ["greedy_search", "exhaustive_search", "beam_search", "sample"])
def test_bad_scorers_and_ids_are_named(name):
    run = _all_searches()[name]
    good = random_scorer(0)
    cases = [
        (dict(eos=V), rf"{name}: eos_id=5 is outside the vocabulary.*V=5"),
        (dict(eos=-1), rf"{name}: eos_id must be an int >= 0"),
        (dict(max_len=0), rf"{name}: max_len must be an int >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            run(good, **kwargs)
    bad_scorers = [
        (lambda p: good(p)[0], r"shape \(5,\) for 1 prefixes; expected \(1, V\)"),
        (lambda p: np.concatenate([good(p), good(p)]), r"shape \(2, 5\) for 1 prefixes"),
        (lambda p: 3.0 * good(p) + 1.0, r"not normalized: row 0 has logsumexp .*apply log_softmax"),
        (lambda p: np.full((len(p), V), np.nan), r"NaN or \+inf"),
        (lambda p: [[1, 2], [3]], r"must return an array of shape"),
        ("not callable", r"log_prob_fn must be callable"),
    ]
    for scorer, message in bad_scorers:
        with pytest.raises(ValueError, match=rf"{name}: .*{message}"):
            run(scorer)


def test_bad_options_are_named():
    f = random_scorer(0)
    cases = [
        (lambda: beam_search(f, BOS, EOS, 0, 3), r"beam_search: beam_size must be an int >= 1, got 0"),
        (lambda: beam_search(f, BOS, EOS, 2.5, 3), r"beam_search: beam_size must be an int >= 1, got 2.5"),
        (lambda: beam_search(f, BOS, EOS, 2, 0), r"beam_search: max_len must be an int >= 1"),
        (lambda: beam_search(f, BOS, EOS, 2, 3, n_best=3), r"beam_search: n_best=3 exceeds beam_size=2"),
        (lambda: beam_search(f, BOS, EOS, 2, 3, length_penalty_style="gmnt"), r"beam_search: length_penalty_style"),
        (lambda: beam_search(f, BOS, EOS, 2, 3, repetition_penalty=0), r"beam_search: repetition_penalty must be"),
        (lambda: beam_search(f, BOS, EOS, 2, 3, no_repeat_ngram_size=-1), r"beam_search: no_repeat_ngram_size"),
        (lambda: beam_search(f, BOS, EOS, 2, 3, early_stopping="never"), r"beam_search: early_stopping must be"),
        (lambda: beam_search(f, BOS, EOS, 2, 3, length_penalty=math.nan), r"beam_search: length_penalty must be"),
        (lambda: beam_search_batch(f, 0, BOS, EOS, 2, 3), r"beam_search_batch: n_sources must be an int >= 1"),
        (lambda: sample(f, BOS, EOS, 3, temperature=0), r"sample: temperature must be a finite number > 0"),
        (lambda: sample(f, BOS, EOS, 3, top_p=0), r"sample: top_p must be in \(0, 1\]"),
        (lambda: sample(f, BOS, EOS, 3, top_k=-1), r"sample: top_k must be an int >= 0"),
        (lambda: apply_repetition_penalty([1.0, 2.0], [0], -1), r"apply_repetition_penalty: penalty must be"),
        (lambda: apply_repetition_penalty([1.0, 2.0], [2], 2), r"apply_repetition_penalty: generated ids must lie in \[0, 2\)"),
        (lambda: apply_repetition_penalty([[1.0, 2.0]], [[0], [1]], 2), r"apply_repetition_penalty: .* one list of generated ids per row"),
        (lambda: length_normalizer(3, 1.0, "nmt"), r"length_normalizer: style must be one of"),
        (lambda: exhaustive_search(lambda p: np.full((len(p), 400), -np.log(400)), BOS, EOS, 3),
         r"exhaustive_search: enumerating length 3 needs 159201 prefixes .*limit 100000"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_every_continuation_banned_is_an_error_not_an_empty_result():
    # token 1 has all the mass (-inf: probability zero elsewhere, EOS included); unigram
    # blocking bans it after its first use, so no hypothesis can be completed
    only_one = lambda prefixes: np.where(np.arange(V) == 1, 0.0, -np.inf)[None].repeat(len(prefixes), 0)
    with pytest.raises(ValueError, match=r"beam_search: no hypothesis has a finite score"):
        beam_search(only_one, BOS, EOS, 2, 3, no_repeat_ngram_size=1)
    with pytest.raises(ValueError, match=r"exhaustive_search: every hypothesis has probability zero"):
        exhaustive_search(only_one, BOS, EOS, 3, no_repeat_ngram_size=1)


def test_scorer_may_return_float32_and_minus_inf():
    def scorer(prefixes):
        rows = random_scorer(2)(prefixes)
        rows[:, 3] = -np.inf
        return log_softmax(rows).astype(np.float32)

    for tokens, _ in beam_search(scorer, BOS, EOS, 3, 5, n_best=3):
        assert 3 not in tokens
    assert 3 not in greedy_search(scorer, BOS, EOS, 5)
    assert 3 not in sample(scorer, BOS, EOS, 5, seed=0)


def test_scorer_check_tells_the_failures_apart_and_takes_rows_within_the_tolerance():
    uniform = np.log(np.full(V, 1 / V))

    def constant(row):
        return lambda prefixes: np.tile(row, (len(prefixes), 1))

    assert len(greedy_search(constant(uniform + 0.9e-3), BOS, EOS, 3)) >= 1  # logsumexp 0.0009: taken
    cases = [
        (uniform + 1.1e-3, r"not normalized: row 0 has logsumexp 0.0011"),
        (np.full(V, 1000.0), r"not normalized: row 0 has logsumexp 1001.6"),  # exp overflows: no warning
        (np.where(np.arange(V) == 2, np.inf, uniform), r"NaN or \+inf"),
        (np.full(V, -np.inf), r"not normalized: row 0 has logsumexp -inf"),
    ]
    for row, message in cases:
        with pytest.raises(ValueError, match=rf"greedy_search: log_prob_fn returned .*{message}"):
            greedy_search(constant(row), BOS, EOS, 3)


def test_tokens_never_include_bos_and_end_with_eos_when_produced():
    scorer = random_scorer(8)
    outputs = [greedy_search(scorer, BOS, EOS, 6), exhaustive_search(scorer, BOS, EOS, 4)[0],
               sample(scorer, BOS, EOS, 6, seed=1), *[t for t, _ in beam_search(scorer, BOS, EOS, 3, 6, n_best=3)]]
    for tokens in outputs:
        assert EOS not in tokens[:-1]
        assert tokens[-1] == EOS or len(tokens) in (4, 6)
