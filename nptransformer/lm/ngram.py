"""Count-based n-gram language models: add-k and interpolated Kneser-Ney.

The conventions (the textbook ones, e.g. Jurafsky & Martin, ch. 3):

* Each sentence is padded with n-1 ``<s>`` in front and one ``</s>`` at the end, so
  "a b" in a trigram model is ``<s> <s> a b </s>`` and three words are predicted: a, b, </s>.
* The vocabulary V is the training tokens plus ``</s>`` and ``<unk>``. ``<s>`` is only ever
  context, never predicted, so it is not in V. A word never seen in training is read as
  ``<unk>``, in the predicted position and in the context alike.
* Every distribution ``P(. | h)`` is over V and sums to 1, for every context h, seen or not.
* Perplexity is ``exp(-(1/N) sum log P)``, the sum over every predicted token, ``</s>``
  included, N the number of those tokens.

**Add-k** (Laplace smoothing for k=1), with ``c(h) = sum_w c(h, w)`` the number of times h was
a context::

    P(w | h) = (c(h, w) + k) / (c(h) + k |V|)

**Interpolated Kneser-Ney** (Chen & Goodman 1998, section 3.5, one discount D for all orders).
Every order m = n, n-1, ..., 1 mixes discounted counts with the order below it; below order 1
is the uniform distribution 1/|V|::

    P_m(w | h) = max(a(h, w) - D, 0) / A(h)  +  D T(h) / A(h) * P_{m-1}(w | h')

where h' is h without its first (oldest) word, ``A(h) = sum_w a(h, w)`` and
``T(h) = #{w : a(h, w) > 0}``; when ``A(h) = 0`` (an unseen context) ``P_m(w|h) = P_{m-1}(w|h')``.
The counts ``a`` are the raw counts ``c(h, w)`` at the top order n, and *continuation counts*
below it: ``a(h, w) = N1+(. h w)``, the number of different words v seen just before "h w".
A word that follows many different words ("Francisco" follows only "San") earns a large
lower-order probability; one that is frequent but always in the same place does not.

Why each P_m sums to 1: the discounted counts sum to ``(A - D T) / A`` (every positive a is at
least 1 >= D), the lower order sums to 1, and ``(A - D T)/A + D T/A = 1``.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class NGramLM:
    """An n-gram language model over token lists.

    ``NGramLM(n, smoothing="add-k", k=1.0)`` or ``NGramLM(n, smoothing="kneser-ney",
    discount=0.75)``; then ``fit(sentences)`` with sentences as lists of string tokens.
    """

    def __init__(self, n: int, smoothing: str = "add-k", k: float = 1.0, discount: float = 0.75):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"NGramLM: n must be a positive integer, got {n!r}")
        if smoothing not in ("add-k", "kneser-ney"):
            raise ValueError(f"NGramLM: smoothing must be 'add-k' or 'kneser-ney', got {smoothing!r}")
        if smoothing == "add-k" and not k > 0:
            raise ValueError(f"NGramLM: add-k needs k > 0 (k = 0 gives zero probabilities), got {k}")
        if smoothing == "kneser-ney" and not 0 < discount <= 1:
            raise ValueError(f"NGramLM: the Kneser-Ney discount must be in (0, 1], got {discount}")
        self.n, self.smoothing, self.k, self.discount = n, smoothing, k, discount
        self.vocab: list[str] | None = None

    # ----------------------------------------------------------------------- training
    def _padded(self, sentence: Sequence[str]) -> list[str]:
        """``<s>`` * (n-1) + sentence + ``</s>``, unknown words mapped to ``<unk>``."""
        return [BOS] * (self.n - 1) + [w if w in self._index else UNK for w in sentence] + [EOS]

    def _events(self, sentence: Sequence[str]):
        """Every (history of n-1 words, predicted word) pair of one sentence."""
        padded = self._padded(sentence)
        for i in range(self.n - 1, len(padded)):
            yield tuple(padded[i - self.n + 1:i]), padded[i]

    def fit(self, sentences: Iterable[Sequence[str]]) -> NGramLM:
        """Count the n-grams of ``sentences`` (each a list of string tokens). Returns self."""
        sentences = [list(s) for s in sentences]
        if not sentences:
            raise ValueError("NGramLM.fit: no sentences to learn from")
        types = set()
        for i, s in enumerate(sentences):
            for w in s:
                if not isinstance(w, str):
                    raise ValueError(f"NGramLM.fit: sentence {i} holds {w!r}; tokens must be strings")
                if w in (BOS, EOS):
                    raise ValueError(f"NGramLM.fit: sentence {i} holds the reserved token {w!r}; "
                                     f"sentence boundaries are added by the model")
                types.add(w)
        self.vocab = sorted(types - {UNK}) + [EOS, UNK]
        self._index = {w: i for i, w in enumerate(self.vocab)}

        # counts[m][h] = Counter of w -> a(h, w) for the order-m model (h has m-1 words):
        # raw counts at m = n; continuation counts below it (Kneser-Ney only).
        counts = {self.n: defaultdict(Counter)}
        for s in sentences:
            for h, w in self._events(s):
                counts[self.n][h][w] += 1
        if self.smoothing == "kneser-ney":
            for m in range(self.n - 1, 0, -1):
                counts[m] = defaultdict(Counter)
                for h, followers in counts[m + 1].items():   # each type (v, *h', w) once
                    for w in followers:
                        counts[m][h[1:]][w] += 1             # one more distinct v before h' w
        self._counts = {m: dict(c) for m, c in counts.items()}
        self._totals = {m: {h: sum(f.values()) for h, f in c.items()} for m, c in counts.items()}
        return self

    def _check_fitted(self):
        if self.vocab is None:
            raise ValueError("NGramLM: call fit(sentences) before asking for probabilities")

    def _history(self, context: Sequence[str]) -> tuple[str, ...]:
        """The last n-1 words of ``context``, unknown words as <unk>; a shorter context is the
        start of a sentence, so it is padded with <s>."""
        if self.n == 1:
            return ()
        h = [w if (w == BOS or w in self._index) else UNK for w in list(context)[-(self.n - 1):]]
        return tuple([BOS] * (self.n - 1 - len(h)) + h)

    # ----------------------------------------------------------------------- probabilities
    def _prob(self, w: str, h: tuple[str, ...]) -> float:
        if self.smoothing == "add-k":
            c_hw = self._counts[self.n].get(h, {}).get(w, 0)
            return (c_hw + self.k) / (self._totals[self.n].get(h, 0) + self.k * len(self.vocab))
        p = 1.0 / len(self.vocab)                   # order 0: uniform over V
        for m in range(1, self.n + 1):              # build up from order 1 to order n
            hm = h[len(h) - (m - 1):] if m > 1 else ()
            followers = self._counts[m].get(hm)
            if followers:                           # A(h) > 0; else P_m = P_{m-1}
                total = self._totals[m][hm]
                p = (max(followers.get(w, 0) - self.discount, 0)
                     + self.discount * len(followers) * p) / total
        return p

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | context). Unknown words (in either) are read as <unk>."""
        self._check_fitted()
        if word == BOS:
            raise ValueError("NGramLM: <s> is never predicted; it only starts contexts")
        return self._prob(word if word in self._index else UNK, self._history(context))

    def log_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """Natural log of P(word | context)."""
        return math.log(self.prob(word, context))

    def distribution(self, context: Sequence[str] = ()) -> np.ndarray:
        """P(w | context) for every w in ``self.vocab``, as a float64 array (it sums to 1)."""
        self._check_fitted()
        h = self._history(context)
        return np.array([self._prob(w, h) for w in self.vocab])

    def sentence_log_prob(self, sentence: Sequence[str]) -> float:
        """log P(sentence): the sum of log P(w | history) over every word and the final </s>."""
        self._check_fitted()
        return sum(math.log(self._prob(w, h)) for h, w in self._events(sentence))

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp(-(1/N) * total log probability), N = number of predicted tokens, </s> included."""
        self._check_fitted()
        total, count = 0.0, 0
        for s in sentences:
            total += self.sentence_log_prob(s)
            count += len(s) + 1
        if count == 0:
            raise ValueError("NGramLM.perplexity: no sentences to evaluate")
        return math.exp(-total / count)

    # ----------------------------------------------------------------------- sampling
    def generate(self, max_len: int, seed: int | None = None, context: Sequence[str] = ()) -> list[str]:
        """Sample words one at a time from P(. | history) until </s> or ``max_len`` words.

        ``context`` (default: the start of a sentence) conditions the first word. Returns the
        sampled words, without </s>; <unk> can be sampled, as the model gives it probability.
        """
        self._check_fitted()
        rng = np.random.default_rng(seed)
        history, out = list(context), []
        while len(out) < max_len:
            p = self.distribution(history)
            w = self.vocab[rng.choice(len(self.vocab), p=p)]
            if w == EOS:
                break
            out.append(w)
            history.append(w)
        return out
