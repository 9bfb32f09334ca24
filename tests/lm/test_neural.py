"""Neural language models under the n-gram convention: the same vocabulary, the same histories,
the same counted tokens, so the same probabilities give the same perplexity as NGramLM."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nptransformer.data import english_grammar
from nptransformer.experiments import fit, step_rng
from nptransformer.lm import CausalSentenceLM, NeuralNGramLM, NGramLM, WordVocabulary
from nptransformer.nn import GPT, Module, ModuleError

# The worked corpus of tests/lm/test_ngram.py: V = [a, b, </s>, <unk>].
CORPUS = [["a", "b"], ["b", "a"], ["a", "a", "b"]]
TEST = [["a", "b"], ["b", "c"], ["c"]]  # "c" was never seen: it is <unk>, as a word and as a context


def test_vocabulary_is_ngram_vocabulary():
    vocab = WordVocabulary.from_sentences(CORPUS)
    assert vocab.words == NGramLM(2).fit(CORPUS).vocab == ["a", "b", "</s>", "<unk>"]
    assert (vocab.eos_id, vocab.unk_id, vocab.bos_id, vocab.pad_id, vocab.num_ids) == (2, 3, 4, 5, 6)
    assert vocab.encode(["b", "c", "a"]) == [1, 3, 0]
    with pytest.raises(ValueError, match="reserved token"):
        WordVocabulary.from_sentences([["a", "</s>"]])
    with pytest.raises(ValueError, match="must end with"):
        WordVocabulary(["a", "b"])


def test_windows_pad_with_n_minus_1_bos_and_predict_eos():
    lm = NeuralNGramLM(WordVocabulary.from_sentences(CORPUS), n=3, embed_dim=2, hidden=3)
    contexts, targets = lm.windows([["a", "c"]])  # <s> <s> a <unk> </s>
    assert contexts.tolist() == [[4, 4], [4, 0], [0, 3]]
    assert targets.tolist() == [0, 3, 2]


def _bigram_as_neural(ngram: NGramLM) -> NeuralNGramLM:
    """A NeuralNGramLM (n=2) that computes exactly the bigram's log P(w | h): one-hot embeddings
    (row h of the identity), a hidden layer and output layer that contribute nothing, and direct
    connections that hold the table of log P(w | h) (column h; the <s> column is h = <s>)."""
    vocab = WordVocabulary(ngram.vocab)
    V = vocab.size
    lm = NeuralNGramLM(vocab, n=2, embed_dim=V + 1, hidden=2, direct=True)
    lm.embed.weight.data = np.eye(V + 1, dtype=np.float64)
    for p in (lm.hidden.weight, lm.hidden.bias, lm.out.weight, lm.out.bias):
        p.data = np.zeros(p.shape)
    table = np.array([np.log(ngram.distribution([h])) for h in vocab.words] + [np.log(ngram.distribution([]))])
    lm.direct.weight.data = table.T  # (V, V + 1): logits = W x picks column h
    return lm


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_neural_bigram_holding_the_ngram_table_has_the_ngram_perplexity(smoothing):
    ngram = NGramLM(2, smoothing=smoothing, k=1.0).fit(CORPUS)
    lm = _bigram_as_neural(ngram)
    for s in TEST:
        assert lm.sentence_log_prob(s) == pytest.approx(ngram.sentence_log_prob(s), rel=1e-12)
    assert lm.perplexity(TEST) == pytest.approx(ngram.perplexity(TEST), rel=1e-12)
    assert lm.distribution(["b"]) == pytest.approx(ngram.distribution(["b"]), rel=1e-12)
    assert lm.prob("c", ["b"]) == pytest.approx(ngram.prob("c", ["b"]), rel=1e-12)  # unknown -> <unk>


def test_perplexity_of_a_fixed_distribution_by_the_formula():
    """A model whose output ignores the context (zero weights, bias = log p) gives every token
    probability p(token), so PP = exp(-(1/N) sum log p), N counting every </s>."""
    vocab = WordVocabulary.from_sentences(CORPUS)
    p = np.array([0.4, 0.3, 0.2, 0.1])  # a, b, </s>, <unk>
    lm = NeuralNGramLM(vocab, n=3, embed_dim=2, hidden=3)
    lm.out.weight.data = np.zeros(lm.out.weight.shape)
    lm.out.bias.data = np.log(p)
    # TEST: a b </s> | b <unk> </s> | <unk> </s>  -> N = 8
    logs = np.log([0.4, 0.3, 0.2, 0.3, 0.1, 0.2, 0.1, 0.2])
    assert lm.perplexity(TEST) == pytest.approx(math.exp(-logs.sum() / 8), rel=1e-12)


class _BigramTable(Module):
    """A causal "model" whose logits at each position are log P(. | that position's token) of a
    bigram NGramLM: the same answers a GPT would give if it had learned the bigram."""

    def __init__(self, ngram, vocab):
        super().__init__()
        rows = [np.log(ngram.distribution([h])) for h in vocab.words] + [np.log(ngram.distribution([]))]
        self.table = np.concatenate([np.array(rows), np.zeros((len(rows), 2))], axis=1)  # + <s>, pad columns
        self.table = np.concatenate([self.table, np.zeros((1, vocab.num_ids))])  # the pad row

    def forward(self, ids):
        from nptransformer import tensor

        return tensor(self.table[ids])  # (B, T) -> (B, T, num_ids)


def test_causal_lm_reads_sentences_under_the_ngram_convention():
    ngram = NGramLM(2, smoothing="kneser-ney").fit(CORPUS)
    vocab = WordVocabulary(ngram.vocab)
    lm = CausalSentenceLM(_BigramTable(ngram, vocab), vocab)
    inputs, targets = lm.batch([["a", "c"], ["b"]])
    assert inputs.tolist() == [[4, 0, 3], [4, 1, 5]]  # <s> a <unk> | <s> b <pad>
    assert targets.tolist() == [[0, 3, 2], [1, 2, -100]]  # a <unk> </s> | b </s> (ignored)
    sentences = TEST + [["a", "a", "b", "a"], ["b"]]  # lengths differ: batched by length, written back in order
    got = lm.sentence_log_probs(sentences, batch_size=2)
    assert got == pytest.approx([ngram.sentence_log_prob(s) for s in sentences], rel=1e-12)
    assert lm.perplexity(sentences) == pytest.approx(ngram.perplexity(sentences), rel=1e-12)


def test_gpt_distribution_is_over_the_predicted_vocabulary():
    """P(w | <s>) summed over the V predicted words is 1: <s> and padding get no probability."""
    vocab = WordVocabulary.from_sentences(CORPUS)
    lm = CausalSentenceLM(GPT(vocab.num_ids, 8, 1, 2, max_len=4, rng=np.random.default_rng(0)), vocab)
    start = np.array([[vocab.bos_id]])
    total = sum(math.exp(-float(lm.token_losses(start, np.array([[w]])).numpy()[0, 0])) for w in range(vocab.size))
    assert total == pytest.approx(1.0, abs=1e-6)
    assert lm.sentence_log_prob(["a"]) == pytest.approx(
        -float(lm.token_losses(*lm.batch([["a"]])).numpy().sum()), rel=1e-6)


def test_neural_ngram_learns_below_the_unigram_perplexity():
    grammar = english_grammar()
    train = [s[:-1] for s in grammar.sample(400, seed=1)]
    test = [s[:-1] for s in grammar.sample(100, seed=2)]
    vocab = WordVocabulary.from_sentences(train)
    lm = NeuralNGramLM(vocab, n=3, embed_dim=8, hidden=32, rng=np.random.default_rng(0))
    contexts, targets = lm.windows(train)
    before = lm.perplexity(test)

    def batch(step):
        rows = step_rng(0, step).integers(0, len(targets), 64)
        return contexts[rows], targets[rows]

    losses = fit(lm, lambda m, b: m.loss(*b), batch, steps=150, lr=1e-2, warmup=10)
    unigram = NGramLM(1).fit(train).perplexity(test)
    after = lm.perplexity(test)
    assert before > unigram > after, (before, unigram, after)
    assert after < NGramLM(2).fit(train).perplexity(test)  # it uses its context, too
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    assert lm.distribution(["the"]).sum() == pytest.approx(1.0, abs=1e-12)


def test_bad_input_gets_one_clear_message():
    vocab = WordVocabulary.from_sentences(CORPUS)
    with pytest.raises(ModuleError, match="n must be an integer >= 2"):
        NeuralNGramLM(vocab, n=1)
    lm = NeuralNGramLM(vocab, n=3, embed_dim=2, hidden=3)
    with pytest.raises(ModuleError, match=r"shape \(N, 2\)"):
        lm(np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="never predicted"):
        lm.prob("<s>", ["a"])
    with pytest.raises(ValueError, match="no sentences"):
        lm.perplexity([])
