"""N-gram language models: hand-worked numbers, normalization, unknown words, and Kneser-Ney
against a brute-force transcription of Chen & Goodman's formula."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest

from nptransformer.lm import NGramLM

# The worked corpus. Padded for a bigram model (one <s>, one </s>):
#   <s> a b </s>
#   <s> b a </s>
#   <s> a a b </s>
# V = {a, b, </s>, <unk>}, |V| = 4 (<s> is context only, never predicted).
# Bigram counts c(h, w), and c(h) = sum_w c(h, w):
#   h = <s>: a 2, b 1            c(<s>) = 3
#   h = a:   b 2, </s> 1, a 1    c(a)   = 4
#   h = b:   </s> 2, a 1         c(b)   = 3
CORPUS = [["a", "b"], ["b", "a"], ["a", "a", "b"]]


def close(x, fraction):
    assert x == pytest.approx(float(fraction), rel=1e-12, abs=0), (x, fraction)


# --------------------------------------------------------------------------- add-k, by hand
def test_vocabulary_convention():
    lm = NGramLM(2).fit(CORPUS)
    assert lm.vocab == ["a", "b", "</s>", "<unk>"]
    assert "<s>" not in lm.vocab
    with pytest.raises(ValueError, match="never predicted"):
        lm.prob("<s>", ["a"])


def test_bigram_add_one_worked_perplexity():
    lm = NGramLM(2, smoothing="add-k", k=1.0).fit(CORPUS)
    # P(w | h) = (c(h, w) + 1) / (c(h) + 4)
    # Test sentence 1: "a b" -> <s> a b </s>
    #   P(a | <s>)  = (2 + 1) / (3 + 4) = 3/7
    #   P(b | a)    = (2 + 1) / (4 + 4) = 3/8
    #   P(</s> | b) = (2 + 1) / (3 + 4) = 3/7
    #   P(sentence 1) = 3/7 * 3/8 * 3/7 = 27/392
    close(lm.prob("a", []), F(3, 7))
    close(lm.prob("b", ["a"]), F(3, 8))
    close(lm.prob("</s>", ["a", "b"]), F(3, 7))
    close(math.exp(lm.sentence_log_prob(["a", "b"])), F(27, 392))
    # Test sentence 2: "b c", c unseen -> <s> b <unk> </s>
    #   P(b | <s>)      = (1 + 1) / (3 + 4) = 2/7
    #   P(<unk> | b)    = (0 + 1) / (3 + 4) = 1/7
    #   P(</s> | <unk>) = (0 + 1) / (0 + 4) = 1/4     (<unk> was never a context)
    #   P(sentence 2) = 2/7 * 1/7 * 1/4 = 1/98
    close(lm.prob("c", ["b"]), F(1, 7))
    close(lm.prob("</s>", ["c"]), F(1, 4))
    close(math.exp(lm.sentence_log_prob(["b", "c"])), F(1, 98))
    # N = 3 + 3 = 6 predicted tokens (</s> counted), so
    #   PP = (27/392 * 1/98) ** (-1/6) = (38416/27) ** (1/6) = (14**4 / 3**3) ** (1/6)
    #      = 14**(2/3) / sqrt(3) = 3.3537040...
    pp = lm.perplexity([["a", "b"], ["b", "c"]])
    assert pp == pytest.approx((38416 / 27) ** (1 / 6), rel=1e-12)
    assert pp == pytest.approx(14 ** (2 / 3) / math.sqrt(3), rel=1e-12)
    assert pp == pytest.approx(3.3537040069, rel=1e-9)


def test_unigram_and_trigram_add_k_by_hand():
    # Unigram counts: a 4, b 3, </s> 3, <unk> 0; N = 10. Add-1: P(w) = (c(w) + 1) / (10 + 4).
    uni = NGramLM(1).fit(CORPUS)
    for w, p in {"a": F(5, 14), "b": F(4, 14), "</s>": F(4, 14), "<unk>": F(1, 14)}.items():
        close(uni.prob(w, ["anything", "at", "all"]), p)
    # Trigram, k = 1/2: the first word is predicted from <s> <s>; two of the three sentences
    # start with a: P(a | <s> <s>) = (2 + 1/2) / (3 + 4/2) = 1/2.
    tri = NGramLM(3, k=0.5).fit(CORPUS)
    close(tri.prob("a", []), F(1, 2))
    close(tri.prob("a", ["<s>", "<s>"]), F(1, 2))
    # P(b | <s> a): "<s> a" is followed by b (S1) and a (S3): (1 + 1/2) / (2 + 2) = 3/8.
    close(tri.prob("b", ["a"]), F(3, 8))
    close(tri.prob("b", ["<s>", "a"]), F(3, 8))
    # P(b | a a) = (1 + 1/2) / (1 + 2) = 1/2 -- only the last n-1 = 2 words of a context count.
    close(tri.prob("b", ["b", "b", "a", "a"]), F(1, 2))


# --------------------------------------------------------------------------- Kneser-Ney, by hand
def test_bigram_kneser_ney_worked_numbers():
    lm = NGramLM(2, smoothing="kneser-ney", discount=0.5).fit(CORPUS)
    # Order 1 uses continuation counts N1+(. w) = number of distinct words before w.
    # Bigram types: (<s>,a) (a,b) (b,</s>) (<s>,b) (b,a) (a,</s>) (a,a)  -> 7 types.
    #   N1+(. a) = |{<s>, b, a}| = 3,  N1+(. b) = |{a, <s>}| = 2,  N1+(. </s>) = |{b, a}| = 2,
    #   N1+(. <unk>) = 0;  A = 7, T = 3 words with a positive count.
    # P_1(w) = max(N1+(. w) - 1/2, 0) / 7 + (1/2 * 3 / 7) * 1/4
    #   P_1(a) = 5/14 + 3/56 = 23/56,  P_1(b) = P_1(</s>) = 3/14 + 3/56 = 15/56,
    #   P_1(<unk>) = 3/56;  23 + 15 + 15 + 3 = 56.
    # P(b | a) = (2 - 1/2)/4 + (1/2 * 3/4) * P_1(b) = 3/8 + 3/8 * 15/56 = 213/448.
    close(lm.prob("b", ["a"]), F(213, 448))
    # P(a | <s>) = (2 - 1/2)/3 + (1/2 * 2/3) * 23/56 = 1/2 + 23/168 = 107/168.
    close(lm.prob("a", []), F(107, 168))
    # An unseen context backs off entirely: P(</s> | <unk>) = P_1(</s>) = 15/56.
    close(lm.prob("</s>", ["zebra"]), F(15, 56))
    close(lm.prob("<unk>", ["zebra"]), F(3, 56))
    # A unigram Kneser-Ney model is absolute discounting of raw counts against the uniform:
    # counts a 4, b 3, </s> 3, N = 10, T = 3: P(a) = 3.5/10 + (0.5*3/10)/4 = 31/80.
    close(NGramLM(1, smoothing="kneser-ney", discount=0.5).fit(CORPUS).prob("a"), F(31, 80))


def brute_force_kn(train, n, D):
    """Interpolated Kneser-Ney straight from Chen & Goodman (1998), by scanning the corpus.
    Shares no code with the model. Returns P(word, context)."""
    V = sorted({w for s in train for w in s}) + ["</s>", "<unk>"]
    padded = [["<s>"] * (n - 1) + list(s) + ["</s>"] for s in train]
    # every m-gram that ends on a predicted position, for m = 1..n
    grams = {m: [tuple(p[i - m + 1:i + 1]) for p in padded for i in range(n - 1, len(p))]
             for m in range(1, n + 1)}

    def count(g):         # c(g)
        return grams[len(g)].count(g)

    def continuation(g):  # N1+(. g): distinct words seen right before g
        return len({x[0] for x in grams[len(g) + 1] if x[1:] == g})

    def p(w, h):          # P_KN(w | h), of order len(h) + 1
        a = count if len(h) + 1 == n else continuation
        lower = p(w, h[1:]) if h else 1 / len(V)
        A = sum(a(h + (v,)) for v in V)
        if A == 0:
            return lower
        T = sum(1 for v in V if a(h + (v,)) > 0)
        return max(a(h + (w,)) - D, 0) / A + D * T / A * lower

    def prob(word, context):
        word = word if word in V else "<unk>"
        context = [w if w in V or w == "<s>" else "<unk>" for w in context]
        h = tuple((["<s>"] * (n - 1) + context)[-(n - 1):]) if n > 1 else ()
        return p(word, h)

    return prob


KN_CORPUS = [s.split() for s in [
    "the cat sat on the mat", "the dog sat on the log", "a cat saw the dog",
    "the cat ran", "san francisco is a city", "the dog saw a cat on a mat", ""]]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("D", [0.1, 0.75, 1.0])
def test_kneser_ney_matches_the_textbook_formula(n, D):
    lm = NGramLM(n, smoothing="kneser-ney", discount=D).fit(KN_CORPUS)
    textbook = brute_force_kn(KN_CORPUS, n, D)
    contexts = [[], ["the"], ["the", "cat"], ["on", "the"], ["sat", "on", "the"], ["dog", "saw", "a"],
                ["zebra"], ["the", "zebra"], ["zebra", "cat", "sat"], ["<s>", "the"], ["a", "cat", "on", "the"]]
    for context in contexts:
        for w in lm.vocab + ["zebra"]:
            assert lm.prob(w, context) == pytest.approx(textbook(w, context), rel=1e-12, abs=1e-15), \
                (w, context)


# --------------------------------------------------------------------------- normalization
def all_contexts(lm, corpus):
    """Every context the model saw, plus unseen ones, ones with unknown words, and the empty one."""
    seen = set()
    for s in corpus:
        padded = ["<s>"] * (lm.n - 1) + s + ["</s>"]
        for i in range(lm.n - 1, len(padded)):
            seen.add(tuple(padded[max(0, i - lm.n + 1):i]))
    extra = [(), ("zebra",), ("the", "zebra"), ("zebra", "the"), ("mat", "mat", "mat"), ("<unk>", "</s>")]
    return sorted(seen) + extra


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("smoothing, param", [("add-k", 1.0), ("add-k", 0.05), ("kneser-ney", 0.75),
                                              ("kneser-ney", 1.0), ("kneser-ney", 0.01)])
def test_every_distribution_sums_to_one(n, smoothing, param):
    lm = NGramLM(n, smoothing=smoothing, k=param, discount=param).fit(KN_CORPUS)
    for context in all_contexts(lm, KN_CORPUS):
        p = lm.distribution(context)
        assert p.shape == (len(lm.vocab),)
        assert (p > 0).all(), context
        assert p.sum() == pytest.approx(1.0, abs=1e-12), context


def test_distribution_agrees_with_prob_and_log_prob():
    lm = NGramLM(3, smoothing="kneser-ney").fit(KN_CORPUS)
    p = lm.distribution(["the", "cat"])
    for i, w in enumerate(lm.vocab):
        assert p[i] == lm.prob(w, ["the", "cat"])
        assert lm.log_prob(w, ["the", "cat"]) == pytest.approx(math.log(p[i]), rel=1e-15)


# --------------------------------------------------------------------------- unseen words, sentences
@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_unseen_words_are_unk_in_word_and_context(smoothing):
    lm = NGramLM(3, smoothing=smoothing).fit(KN_CORPUS)
    assert lm.prob("zebra", ["the", "cat"]) == lm.prob("<unk>", ["the", "cat"]) > 0
    assert lm.prob("sat", ["zebra", "cat"]) == lm.prob("sat", ["<unk>", "cat"])
    assert lm.prob("sat", ["the", "okapi"]) == lm.prob("sat", ["the", "zebra"])
    assert np.isfinite(lm.sentence_log_prob(["zebra", "okapi", "gnu"]))


@pytest.mark.parametrize("n, smoothing", list(itertools.product([1, 2, 3], ["add-k", "kneser-ney"])))
def test_sentence_log_prob_is_the_chain_rule_and_perplexity_counts_eos(n, smoothing):
    lm = NGramLM(n, smoothing=smoothing).fit(KN_CORPUS)
    s = ["the", "cat", "sat", "on", "a", "zebra"]
    chain = sum(lm.log_prob(w, s[:i]) for i, w in enumerate(s)) + lm.log_prob("</s>", s)
    assert lm.sentence_log_prob(s) == pytest.approx(chain, rel=1e-12)
    test = [s, ["the", "dog"], []]
    n_tokens = sum(len(t) + 1 for t in test)              # 7 + 3 + 1: every </s> counted
    expected = math.exp(-sum(lm.sentence_log_prob(t) for t in test) / n_tokens)
    assert lm.perplexity(test) == pytest.approx(expected, rel=1e-12)


def test_kneser_ney_beats_add_one_on_held_out_text():
    held_out = [s.split() for s in ["the cat sat on the log", "a dog saw the cat", "the mat is a city"]]
    add_one = NGramLM(3).fit(KN_CORPUS).perplexity(held_out)
    kn = NGramLM(3, smoothing="kneser-ney").fit(KN_CORPUS).perplexity(held_out)
    assert kn < add_one


# --------------------------------------------------------------------------- generation
def test_generate_is_seeded_bounded_and_stops_at_eos():
    lm = NGramLM(2, smoothing="kneser-ney").fit(KN_CORPUS)
    assert lm.generate(20, seed=3) == lm.generate(20, seed=3)
    assert lm.generate(0, seed=0) == []
    for seed in range(30):
        out = lm.generate(5, seed=seed)
        assert len(out) <= 5 and "</s>" not in out and "<s>" not in out
        assert set(out) <= set(lm.vocab)
    # A model that has only ever seen "x y": with a tiny discount it almost surely says it back.
    sure = NGramLM(2, smoothing="kneser-ney", discount=1e-9).fit([["x", "y"]])
    assert sure.generate(10, seed=0) == ["x", "y"]
    assert sure.generate(10, seed=0, context=["x"]) == ["y"]


def test_generate_samples_from_the_model_distribution():
    lm = NGramLM(2, smoothing="add-k", k=0.5).fit(KN_CORPUS)
    p = lm.distribution(["the"])
    draws = [lm.generate(1, seed=s, context=["the"]) for s in range(4000)]
    freq = np.array([sum(d == [w] for d in draws) for w in lm.vocab], dtype=float)
    freq[lm.vocab.index("</s>")] = sum(d == [] for d in draws)   # </s> ends with nothing said
    freq /= len(draws)
    # Each frequency is within 4.5 standard errors of its probability.
    assert np.all(np.abs(freq - p) <= 4.5 * np.sqrt(p * (1 - p) / len(draws)) + 1e-12)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, words", [
    ({"n": 0}, "positive integer"), ({"n": 2.0}, "positive integer"),
    ({"n": 2, "smoothing": "good-turing"}, "smoothing"),
    ({"n": 2, "k": 0.0}, "k > 0"), ({"n": 2, "smoothing": "kneser-ney", "discount": 0.0}, "discount"),
    ({"n": 2, "smoothing": "kneser-ney", "discount": 1.5}, "discount"),
])
def test_bad_settings(kwargs, words):
    with pytest.raises(ValueError, match=words):
        NGramLM(**kwargs)


def test_bad_training_data_and_unfitted_use():
    with pytest.raises(ValueError, match="no sentences"):
        NGramLM(2).fit([])
    with pytest.raises(ValueError, match="reserved"):
        NGramLM(2).fit([["a", "</s>", "b"]])
    with pytest.raises(ValueError, match="reserved"):
        NGramLM(2).fit([["<s>", "a"]])
    with pytest.raises(ValueError, match="strings"):
        NGramLM(2).fit([["a", 3]])
    with pytest.raises(ValueError, match="fit"):
        NGramLM(2).prob("a")
    with pytest.raises(ValueError, match="no sentences"):
        NGramLM(2).fit(CORPUS).perplexity([])
