"""The synthetic language: exact entropy against hand computation and Monte Carlo, exact log_prob."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from nptransformer.data import END, EOS_ID, ProbabilisticGrammar, english_grammar


@pytest.fixture(scope="module")
def english():
    return english_grammar()


@pytest.fixture(scope="module")
def samples(english):
    return english.sample(20000, seed=0)


def test_geometric_grammar_has_one_bit_per_token():
    # Sentences a^k </s> with P = 2^-(k+1): E[-log2 P] = E[k + 1] = 2 bits over E[k + 1] = 2 tokens.
    g = ProbabilisticGrammar({"S": [("a", 0.5, "S"), (END, 0.5, None)]}, start="S")
    assert g.sentence_entropy("bits") == pytest.approx(2.0, abs=1e-12)
    assert g.expected_length() == pytest.approx(2.0, abs=1e-12)
    assert g.entropy_per_token("bits") == pytest.approx(1.0, abs=1e-12)
    assert g.entropy_per_token() == pytest.approx(math.log(2), abs=1e-12)
    assert g.perplexity() == pytest.approx(2.0, abs=1e-12)


def test_two_step_grammar_matches_the_hand_computation():
    # One free choice (x: 1/4, y: 3/4) and then a certain </s>: H = h(1/4) nats over 2 tokens.
    g = ProbabilisticGrammar({"S": [("x", 0.25, "A"), ("y", 0.75, "A")], "A": [(END, 1.0, None)]}, start="S")
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert g.sentence_entropy() == pytest.approx(h, abs=1e-12)
    assert g.entropy_per_token() == pytest.approx(h / 2, abs=1e-12)
    assert g.log_prob("y </s>") == pytest.approx(math.log(0.75), abs=1e-15)


def test_loop_with_two_states_matches_the_hand_computation():
    # S -a(p)-> T, S -</s>(1-p)-> end, T -b(1)-> S: sentences (a b)^k </s>, P = p^k (1-p).
    # E[k] = p / (1 - p); E[-log P] = -E[k] log p - log(1-p); E[length] = 2 E[k] + 1.
    p = 0.3
    g = ProbabilisticGrammar({"S": [("a", p, "T"), (END, 1 - p, None)], "T": [("b", 1.0, "S")]}, start="S")
    k = p / (1 - p)
    assert g.sentence_entropy() == pytest.approx(-k * math.log(p) - math.log(1 - p), abs=1e-12)
    assert g.expected_length() == pytest.approx(2 * k + 1, abs=1e-12)
    assert g.log_prob(["a", "b", "a", "b", END]) == pytest.approx(2 * math.log(p) + math.log(1 - p), abs=1e-15)


def test_monte_carlo_agrees_with_the_exact_entropy(english, samples):
    neg_log_p = np.array([-english.log_prob(s) for s in samples])  # per sentence, nats
    lengths = np.array([len(s) for s in samples], dtype=float)
    rate = neg_log_p.sum() / lengths.sum()
    # Standard error of a ratio of means (delta method): sd(a - R b) / (sqrt(n) mean(b)).
    se = np.std(neg_log_p - rate * lengths) / (np.sqrt(len(samples)) * lengths.mean())
    assert abs(rate - english.entropy_per_token()) < 4 * se
    assert se < 0.01  # the check is tight: ~0.1% of the entropy
    length_se = lengths.std() / np.sqrt(len(samples))
    assert abs(lengths.mean() - english.expected_length()) < 4 * length_se
    assert abs(neg_log_p.mean() - english.sentence_entropy()) < 4 * neg_log_p.std() / np.sqrt(len(samples))


def test_a_bigram_model_cannot_beat_the_entropy_floor(english, samples):
    # Cross-entropy >= entropy: a bigram model fitted on samples, scored on fresh ones, stays above.
    stream = [END] + [w for s in samples for w in s]
    pairs, firsts = Counter(zip(stream, stream[1:])), Counter(stream[:-1])
    vocab = len(english.words) + 1
    test = [END] + [w for s in english.sample(5000, seed=1) for w in s]
    nll = [-math.log((pairs[a, b] + 0.01) / (firsts[a] + 0.01 * vocab)) for a, b in zip(test, test[1:])]
    floor = english.entropy_per_token()
    assert floor < np.mean(nll) < floor + 0.5
    assert 1.0 < english.entropy_per_token("bits") < 3.0  # an interesting language, neither trivial nor noise


def test_log_prob_is_the_product_along_the_path(english):
    assert english.log_prob("alice sleeps . </s>") == pytest.approx(math.log(0.15 * 0.2 * 0.6), abs=1e-15)
    assert english.log_prob(["the", "old", "dog", "sees", "bob", ".", END]) == pytest.approx(
        math.log(0.35 * 0.1 * 0.3 * 0.25 * 0.1 * 0.6), abs=1e-15)
    for impossible in ("alice sleeps .", "alice sleeps . </s> bob", "alice flies . </s>", "the the . </s>", ""):
        assert english.log_prob(impossible) == -math.inf


def test_samples_are_sentences_of_the_language(english, samples):
    assert english.sample(30, seed=5) == english.sample(30, seed=5)
    assert english.sample(30, seed=5) != english.sample(30, seed=6)
    for s in samples[:2000]:
        assert s[-1] == END and END not in s[:-1]
        assert math.isfinite(english.log_prob(s))
    assert {w for s in samples for w in s} == set(english.words) | {END}


def test_encode_writes_end_of_sentence_as_eos(english, samples):
    tok = english.tokenizer()
    ids = english.encode(samples[:3])
    assert ids.dtype == np.int64 and len(ids) == sum(len(s) for s in samples[:3])
    assert (ids == EOS_ID).sum() == 3 and ids[-1] == EOS_ID
    assert tok.decode(ids, skip_special=False) == " ".join(" ".join(s) for s in samples[:3]).replace(END, "<eos>")


@pytest.mark.parametrize("rules, start, message", [
    ({"S": [("a", 0.5, "S"), (END, 0.4, None)]}, "S", "sum to"),
    ({"S": [("a", 0.5, "S"), ("a", 0.5, None)]}, "S", "twice"),
    ({"S": [(END, 1.0, "S")]}, "S", "only '</s>' ends a sentence"),
    ({"S": [("a", 1.0, "T")]}, "S", "no rules"),
    ({"S": [("a", 0.5, "T"), (END, 0.5, None)], "T": [("b", 1.0, "T")]}, "S", r"state\(s\) \['T'\]"),
    ({"S": [(END, 1.0, None)]}, "X", "start state"),
    ({"S": [("a b", 1.0, "S")]}, "S", "without spaces"),
    ({"S": [("a", 0.0, "S"), (END, 1.0, None)]}, "S", "0 < p <= 1"),
])
def test_bad_grammars_are_rejected_with_a_reason(rules, start, message):
    with pytest.raises(ValueError, match=message):
        ProbabilisticGrammar(rules, start)


def test_unit_must_be_nats_or_bits(english):
    with pytest.raises(ValueError, match="'nats' or 'bits'"):
        english.entropy_per_token("bans")
