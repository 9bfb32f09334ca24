"""Neural language models scored exactly as the n-gram models are, so their perplexities compare.

``NeuralNGramLM`` is the model of Bengio, Ducharme, Vincent and Jauvin, "A Neural Probabilistic
Language Model" (JMLR 2003). It keeps the n-gram's window of the last n-1 words and replaces the
table of counts with a function that generalizes between similar histories::

    x = [C(w_{i-n+1}); ...; C(w_{i-1})]          each word's embedding, concatenated: (n-1) E numbers
    a = b + U tanh(d + H x)  (+ W x)              one tanh hidden layer (and optional direct connections)
    P(w_i = j | history) = softmax(a)_j           over the vocabulary V

``CausalSentenceLM`` reads any causal model (a ``GPT``: ids (B, T) -> logits (B, T, .)) the same
way: it sees the whole sentence so far instead of a window.

The convention is ``NGramLM``'s (nptransformer/lm/ngram.py), id for id:

* V is the training words, sorted, then ``</s>`` and ``<unk>``: ``WordVocabulary.words`` is
  ``NGramLM(...).fit(same sentences).vocab``. Every distribution is a softmax over exactly these V
  words; ``<s>`` (id V) is only ever context and padding (id V + 1) only fills batches, so
  neither gets probability.
* The n-gram model's histories start with n-1 ``<s>``; the neural n-gram's windows do too, and the
  causal model reads one ``<s>`` before the first word.
* Every word and the final ``</s>`` is predicted and counted; a word never seen in training is
  ``<unk>``, in the predicted position and in the context alike.
* perplexity = exp(-(1/N) sum log P), N = the number of predicted tokens, ``</s>`` included.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..data import pad_batch
from ..nn import Embedding, Linear, Module
from ..nn.module import ModuleError, eval_mode
from .ngram import BOS, EOS, UNK

IGNORE_INDEX = -100  # targets at padded positions: F.cross_entropy skips them


class WordVocabulary:
    """The n-gram convention's vocabulary as ids.

    Ids ``0 .. V-1`` are the words a model predicts: the training words sorted (``<unk>`` left
    out), then ``</s>`` (``eos_id``), then ``<unk>`` (``unk_id``), the order of ``NGramLM.vocab``.
    ``bos_id = V`` is ``<s>``, context only; ``pad_id = V + 1`` fills batches. A model's
    embedding table needs ``num_ids = V + 2`` rows (a neural n-gram uses V + 1: no padding).
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if len(words) < 2 or words[-2:] != [EOS, UNK]:
            raise ValueError(f"WordVocabulary: the words must end with {EOS!r}, {UNK!r}, got {words[-3:]}")
        if len(set(words)) != len(words) or BOS in words:
            raise ValueError(f"WordVocabulary: words must be distinct and must not hold {BOS!r}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.size = len(words)  # V
        self.eos_id, self.unk_id = self.size - 2, self.size - 1
        self.bos_id, self.pad_id = self.size, self.size + 1
        self.num_ids = self.size + 2

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]]) -> WordVocabulary:
        """The vocabulary of ``sentences`` (lists of string tokens), as ``NGramLM.fit`` builds it."""
        types = set()
        for i, s in enumerate(sentences):
            for w in s:
                if not isinstance(w, str):
                    raise ValueError(f"WordVocabulary: sentence {i} holds {w!r}; tokens must be strings")
                if w in (BOS, EOS):
                    raise ValueError(f"WordVocabulary: sentence {i} holds the reserved token {w!r}; "
                                     "sentence boundaries are added by the model")
                types.add(w)
        if not types:
            raise ValueError("WordVocabulary.from_sentences: no words to learn from")
        return cls(sorted(types - {UNK}) + [EOS, UNK])

    def encode(self, sentence: Sequence[str]) -> list[int]:
        """The ids of the words of ``sentence``; unknown words are ``unk_id``. No ``</s>`` is added."""
        index, unk = self.index, self.unk_id
        return [index.get(w, unk) for w in sentence]

    def __len__(self):
        return self.size

    def __repr__(self):
        return f"WordVocabulary({self.size} predicted words)"


def _count(sentences) -> int:
    """N, the number of predicted tokens: every word and one </s> per sentence."""
    return sum(len(s) + 1 for s in sentences)


class _SentenceScores:
    """What a sentence language model offers once ``sentence_log_probs`` is defined."""

    def sentence_log_probs(self, sentences) -> np.ndarray:
        raise NotImplementedError

    def sentence_log_prob(self, sentence: Sequence[str]) -> float:
        """log P(sentence): the sum of log P(w | history) over every word and the final </s>."""
        return float(self.sentence_log_probs([sentence])[0])

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp(-(1/N) * total log probability), N = number of predicted tokens, </s> included."""
        sentences = [list(s) for s in sentences]
        if not sentences:
            raise ValueError(f"{type(self).__name__}.perplexity: no sentences to evaluate")
        return math.exp(-float(self.sentence_log_probs(sentences).sum()) / _count(sentences))


class NeuralNGramLM(_SentenceScores, Module):
    """Bengio et al. (2003): embeddings of the last n-1 words -> tanh hidden layer -> softmax over V.

    ``forward(contexts)`` maps ids (N, n-1) to logits (N, V); ``windows(sentences)`` gives every
    (context, next word) pair of a corpus as ids; ``sentence_log_probs``, ``perplexity``,
    ``prob`` and ``distribution`` read it as ``NGramLM`` is read. ``direct=True`` adds the paper's
    direct connections from the embeddings to the output, ``W x``.

    The embeddings start at N(0, 0.1^2) (the paper's small random start), the layers as ``Linear``.
    """

    def __init__(self, vocab: WordVocabulary, n: int, embed_dim: int = 32, hidden: int = 128,
                 direct: bool = False, rng=None):
        super().__init__()
        if not isinstance(n, int) or n < 2:
            raise ModuleError(f"NeuralNGramLM: n must be an integer >= 2 (a window of n-1 >= 1 words), got {n!r}")
        self.vocab, self.n = vocab, n
        self.embed = Embedding(vocab.size + 1, embed_dim, rng=rng, std=0.1)  # V words and <s>
        self.hidden = Linear((n - 1) * embed_dim, hidden, rng=rng)
        self.out = Linear(hidden, vocab.size, rng=rng)
        self.direct = Linear((n - 1) * embed_dim, vocab.size, bias=False, rng=rng) if direct else None

    def forward(self, contexts):
        """Context ids (N, n-1) -> next-word logits (N, V)."""
        data = contexts.data if isinstance(contexts, Tensor) else contexts
        if data.ndim != 2 or data.shape[1] != self.n - 1 or data.dtype.kind not in "iu":
            raise ModuleError(f"NeuralNGramLM: expected integer context ids of shape (N, {self.n - 1}), "
                              f"got shape {tuple(data.shape)} and dtype {data.dtype}")
        e = self.embed(contexts)  # (N, n-1) -> (N, n-1, E)
        x = e.reshape(e.shape[0], -1)  # (N, (n-1) E): the concatenated context vectors
        logits = self.out(self.hidden(x).tanh())  # (N, H) -> (N, V)
        return logits if self.direct is None else logits + self.direct(x)

    def windows(self, sentences: Iterable[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (N, n-1), targets (N,)) int64: one row per predicted token of every sentence,
        ``</s>`` included, each context starting with n-1 ``<s>`` (the n-gram's histories)."""
        v, k = self.vocab, self.n - 1
        padded = [[v.bos_id] * k + v.encode(s) + [v.eos_id] for s in sentences]
        if not padded:
            return np.zeros((0, k), dtype=np.int64), np.zeros(0, dtype=np.int64)
        contexts = np.array([p[i - k:i] for p in padded for i in range(k, len(p))], dtype=np.int64)
        targets = np.array([p[i] for p in padded for i in range(k, len(p))], dtype=np.int64)
        return contexts, targets

    def loss(self, contexts, targets):
        """Mean -log P(target | context) over a batch of windows, in nats."""
        return F.cross_entropy(self(contexts), targets)

    def sentence_log_probs(self, sentences, batch_size: int = 4096) -> np.ndarray:
        """log P(sentence) for each sentence (float64), in eval mode, without gradients."""
        sentences = [list(s) for s in sentences]
        contexts, targets = self.windows(sentences)
        nll = np.zeros(len(targets))
        with no_grad(), eval_mode(self):
            for start in range(0, len(targets), batch_size):
                part = slice(start, start + batch_size)
                losses = F.cross_entropy(self(contexts[part]), targets[part], reduction="none")
                nll[part] = losses.numpy()
        sentence_of = np.repeat(np.arange(len(sentences)), [len(s) + 1 for s in sentences])
        return -np.bincount(sentence_of, weights=nll, minlength=len(sentences))

    def distribution(self, context: Sequence[str] = ()) -> np.ndarray:
        """P(w | context) for every w in ``vocab.words`` (float64; it sums to 1). A context shorter
        than n-1 words is the start of a sentence, padded with ``<s>``."""
        v, k = self.vocab, self.n - 1
        ids = [v.bos_id if w == BOS else v.index.get(w, v.unk_id) for w in list(context)[-k:]]
        ids = [v.bos_id] * (k - len(ids)) + ids
        with no_grad(), eval_mode(self):
            logits = self(np.array([ids], dtype=np.int64)).numpy()[0].astype(np.float64)
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | context). Unknown words (in either) are read as <unk>."""
        if word == BOS:
            raise ValueError("NeuralNGramLM: <s> is never predicted; it only starts contexts")
        return float(self.distribution(context)[self.vocab.index.get(word, self.vocab.unk_id)])

    def extra_repr(self):
        return f"n={self.n}, V={self.vocab.size}, direct={self.direct is not None}"


class CausalSentenceLM(_SentenceScores):
    """A causal model (``GPT``) read as a sentence language model under the n-gram convention.

    The model reads ``<s> w1 ... wk`` and predicts ``w1 ... wk </s>``; its logits are cut to the
    V predicted words (``logits[..., :V]``) before the softmax, in training and in evaluation, so
    ``<s>`` and padding never take probability. The model needs ``vocab.num_ids`` input ids and
    at least ``longest sentence + 1`` positions.
    """

    def __init__(self, model, vocab: WordVocabulary):
        self.model, self.vocab = model, vocab

    def batch(self, sentences) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each (B, T) int64 with T = longest sentence + 1: inputs are
        ``<s> w1 .. wk`` then ``pad_id``, targets ``w1 .. wk </s>`` then IGNORE_INDEX."""
        v = self.vocab
        ids = [v.encode(s) for s in sentences]
        inputs, _ = pad_batch([[v.bos_id, *s] for s in ids], v.pad_id)
        targets, _ = pad_batch([[*s, v.eos_id] for s in ids], IGNORE_INDEX)
        return inputs, targets

    def token_losses(self, inputs, targets):
        """-log P(target | everything before it) at every position (B, T); 0 at padding."""
        logits = self.model(inputs)[..., :self.vocab.size]  # (B, T, num_ids) -> (B, T, V)
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")

    def loss(self, inputs, targets):
        """Mean -log P over the predicted tokens of a batch, in nats: the training loss."""
        logits = self.model(inputs)[..., :self.vocab.size]
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def sentence_log_probs(self, sentences, batch_size: int = 64) -> np.ndarray:
        """log P(sentence) for each sentence (float64), in eval mode, without gradients. Sentences
        are batched in order of length, so little padding is computed."""
        sentences = [list(s) for s in sentences]
        order = np.argsort([len(s) for s in sentences], kind="stable")
        out = np.zeros(len(sentences))
        with no_grad(), eval_mode(self.model):
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                losses = self.token_losses(*self.batch([sentences[i] for i in rows]))
                out[rows] = -losses.numpy().astype(np.float64).sum(axis=1)
        return out

