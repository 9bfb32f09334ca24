"""A synthetic language from a probabilistic grammar whose entropy per token is known exactly.

Why: a language model's loss on real text has no known floor, so "is 1.9 nats good?" has no
answer. On text sampled from a known probabilistic source it does: no model can average less than
the source's entropy per token (cross-entropy >= entropy), so ``loss - entropy_per_token()`` is
exactly how much the model still has to learn.

The grammar is a *deterministic probabilistic finite-state automaton*. Each state lists its
transitions ``(word, probability, next state)``; probabilities in a state sum to 1, and no word
appears twice in one state, so a sentence follows exactly one path and its probability is the
product of the probabilities along that path. Every sentence ends with the token ``</s>``, the
one transition that ends the walk.

The entropy, exactly. Write ``p(w|s)`` for the probability of word ``w`` in state ``s`` and
``h(s) = -sum_w p(w|s) log p(w|s)`` for the entropy of one step there. Let ``H(s)`` be the expected
``-log P(rest of the sentence)`` starting in ``s``, and ``L(s)`` the expected number of tokens
still to come (``</s>`` included). Taking one step and then continuing from the next state:

    H(s) = h(s) + sum_w p(w|s) H(next(s, w))        H(end) = 0
    L(s) = 1    + sum_w p(w|s) L(next(s, w))        L(end) = 0

With ``Q[s, t]`` the probability of stepping from state ``s`` to state ``t``, these read
``(I - Q) H = h`` and ``(I - Q) L = 1``: two linear systems, solved with ``numpy.linalg.solve``.
Then ``H(start)`` is the entropy of a sentence and ``L(start)`` its expected length, and

    entropy per token = H(start) / L(start) = E[-log P(sentence)] / E[tokens per sentence].

That ratio is the entropy rate of the stream of independent sentences a language model reads
(by the renewal-reward theorem the long-run average of ``-log P`` per token tends to it), i.e.
the lowest average cross-entropy per token that any model can reach on this language.
"""
from __future__ import annotations

import bisect
import math

import numpy as np

from .tokenizers import WordTokenizer

END = "</s>"


class ProbabilisticGrammar:
    """A deterministic probabilistic finite-state grammar (see the module docstring).

    ``rules`` maps each state name to its transitions, a list of ``(word, probability,
    next_state)``; the transition with word ``"</s>"`` ends the sentence and has ``next_state``
    ``None``. ``start`` names the state every sentence starts in.

    >>> g = ProbabilisticGrammar({"S": [("a", 0.5, "S"), ("</s>", 0.5, None)]}, start="S")
    >>> g.entropy_per_token("bits")  # a^k </s> with probability 2^-(k+1): one bit per token
    1.0
    """

    def __init__(self, rules: dict, start: str):
        if start not in rules:
            raise ValueError(f"ProbabilisticGrammar: the start state {start!r} has no rules")
        self.start = start
        self.rules = {}
        for state, transitions in rules.items():
            self.rules[state] = self._check_state(state, list(transitions), rules)
        self._states = self._reachable_states()
        self._check_every_state_can_end()
        self._entropy, self._length = self._solve()

    @staticmethod
    def _check_state(state, transitions, rules):
        where = f"ProbabilisticGrammar: state {state!r}"
        if not transitions:
            raise ValueError(f"{where} has no transitions")
        words = [t[0] for t in transitions]
        if len(set(words)) != len(words):
            raise ValueError(f"{where} lists a word twice ({words}); the grammar must be deterministic")
        checked = {}
        for word, prob, target in transitions:
            if not (isinstance(word, str) and word and word.split() == [word]):
                raise ValueError(f"{where}: words must be non-empty strings without spaces, got {word!r}")
            if not (0.0 < prob <= 1.0):
                raise ValueError(f"{where}: probability of {word!r} is {prob}, expected 0 < p <= 1")
            if (word == END) != (target is None):
                raise ValueError(
                    f"{where}: {END!r} and only {END!r} ends a sentence (next state None); got {word!r} -> {target!r}"
                )
            if target is not None and target not in rules:
                raise ValueError(f"{where}: {word!r} leads to {target!r}, which has no rules")
            checked[word] = (float(prob), target)
        total = math.fsum(p for p, _ in checked.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"{where}: probabilities sum to {total!r}, expected 1")
        return checked

    def _reachable_states(self) -> list[str]:
        seen, stack = {self.start: None}, [self.start]
        while stack:
            for _, target in self.rules[stack.pop()].values():
                if target is not None and target not in seen:
                    seen[target] = None
                    stack.append(target)
        return list(seen)

    def _check_every_state_can_end(self):
        can_end = {s for s in self._states if END in self.rules[s]}
        grew = True
        while grew:
            new = {s for s in self._states if s not in can_end and any(t in can_end for _, t in self.rules[s].values())}
            can_end |= new
            grew = bool(new)
        stuck = [s for s in self._states if s not in can_end]
        if stuck:
            raise ValueError(f"ProbabilisticGrammar: from state(s) {stuck} no path reaches {END!r}, so sentences never end")

    def _solve(self):
        index = {s: i for i, s in enumerate(self._states)}
        n = len(self._states)
        Q = np.zeros((n, n))  # Q[s, t]: probability of stepping from s to t (the end state is left out)
        h = np.zeros(n)  # h[s]: entropy of the next token in state s, in nats
        for s in self._states:
            for prob, target in self.rules[s].values():
                h[index[s]] -= prob * math.log(prob)
                if target is not None:
                    Q[index[s], index[target]] += prob
        A = np.eye(n) - Q
        H = np.linalg.solve(A, h)  # expected -log P(rest of sentence) from each state
        L = np.linalg.solve(A, np.ones(n))  # expected tokens still to come from each state
        return float(H[index[self.start]]), float(L[index[self.start]])

    # ------------------------------------------------------------------ exact quantities
    @property
    def words(self) -> list[str]:
        """Every word a sentence can contain, ``</s>`` left out, sorted."""
        return sorted({w for s in self._states for w in self.rules[s] if w != END})

    def sentence_entropy(self, unit: str = "nats") -> float:
        """E[-log P(sentence)]: the entropy of one whole sentence."""
        return self._entropy / _unit_scale(unit)

    def expected_length(self) -> float:
        """E[number of tokens in a sentence], ``</s>`` included."""
        return self._length

    def entropy_per_token(self, unit: str = "nats") -> float:
        """E[-log P(sentence)] / E[tokens per sentence]: the floor of a language model's loss per
        token on this language, in ``"nats"`` (natural log, like cross-entropy losses) or ``"bits"``.

        The floor assumes the model knows where each sentence began. A window that starts in the
        middle of a sentence hides that at its first positions, so compare it with the loss at
        positions that come after an ``</s>`` in the window, or over long windows."""
        return self._entropy / self._length / _unit_scale(unit)

    def perplexity(self) -> float:
        """exp(entropy per token in nats): the lowest perplexity any model can reach."""
        return math.exp(self._entropy / self._length)

    # ------------------------------------------------------------------ sentences
    def log_prob(self, sentence) -> float:
        """The exact natural log of P(sentence); ``-inf`` if the grammar cannot produce it.

        ``sentence`` is a list of tokens or a string of space-separated tokens; a complete
        sentence ends with ``</s>``.
        """
        tokens = sentence.split() if isinstance(sentence, str) else list(sentence)
        state, total = self.start, 0.0
        for token in tokens:
            if state is None or token not in self.rules[state]:
                return -math.inf
            prob, state = self.rules[state][token]
            total += math.log(prob)
        return total if state is None and tokens else -math.inf

    def sample(self, n: int, seed: int) -> list[list[str]]:
        """``n`` sentences drawn independently, each a list of tokens ending with ``</s>``."""
        if n < 0:
            raise ValueError(f"ProbabilisticGrammar.sample: n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        tables = {}  # state -> (cumulative probabilities, words, next states)
        for s in self._states:
            words = list(self.rules[s])
            cumulative = np.cumsum([self.rules[s][w][0] for w in words]).tolist()
            cumulative[-1] = 1.0  # so every draw u < 1 finds a word
            tables[s] = (cumulative, words, [self.rules[s][w][1] for w in words])
        uniforms = iter(())
        sentences = []
        for _ in range(n):
            state, sentence = self.start, []
            while state is not None:
                u = next(uniforms, None)
                if u is None:  # draw uniforms 4096 at a time: one NumPy call instead of thousands
                    uniforms = iter(rng.random(4096).tolist())
                    u = next(uniforms)
                cumulative, words, targets = tables[state]
                k = bisect.bisect_right(cumulative, u)  # the first word whose cumulative probability exceeds u
                sentence.append(words[k])
                state = targets[k]
            sentences.append(sentence)
        return sentences

    def tokenizer(self) -> WordTokenizer:
        """A word tokenizer over ``words``; ``</s>`` is its ``<eos>`` (see ``encode``)."""
        return WordTokenizer(self.words)

    def encode(self, sentences, tokenizer: WordTokenizer | None = None) -> np.ndarray:
        """All ``sentences`` as one int64 stream of ids, ``</s>`` written as ``<eos>``.

        One id per grammar token, so a model's mean loss per id on this stream is directly
        comparable to ``entropy_per_token()``.
        """
        tokenizer = self.tokenizer() if tokenizer is None else tokenizer
        ids = [tokenizer.eos_id if token == END else tokenizer.token_to_id(token) for s in sentences for token in s]
        return np.asarray(ids, dtype=np.int64)


def _unit_scale(unit: str) -> float:
    if unit == "nats":
        return 1.0
    if unit == "bits":
        return math.log(2.0)
    raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")


def english_grammar() -> ProbabilisticGrammar:
    """A small English-like language: determiners, adjectives, nouns, verbs, prepositions,
    clauses joined by "and", a full stop, then ``</s>``.

    >>> " ".join(english_grammar().sample(1, seed=3)[0])  # doctest: +SKIP
    'the old dog chases a ball near bob . </s>'
    """
    nouns = [("cat", 0.3), ("dog", 0.3), ("bird", 0.2), ("child", 0.2)]
    things = [("cat", 0.25), ("dog", 0.25), ("bird", 0.2), ("ball", 0.3)]
    return ProbabilisticGrammar(
        {
            "sentence": [("the", 0.35, "det"), ("a", 0.25, "det"), ("every", 0.1, "det"),
                         ("alice", 0.15, "verb"), ("bob", 0.15, "verb")],
            "det": [("big", 0.1, "adj"), ("small", 0.1, "adj"), ("old", 0.1, "adj"), ("red", 0.05, "adj"),
                    ("cat", 0.2, "verb"), ("dog", 0.2, "verb"), ("bird", 0.15, "verb"), ("child", 0.1, "verb")],
            "adj": [(w, p, "verb") for w, p in nouns],
            "verb": [("sees", 0.25, "object"), ("likes", 0.2, "object"), ("chases", 0.15, "object"),
                     ("sleeps", 0.2, "clause_end"), ("runs", 0.2, "clause_end")],
            "object": [("the", 0.5, "object_det"), ("a", 0.3, "object_det"),
                       ("alice", 0.1, "clause_end"), ("bob", 0.1, "clause_end")],
            "object_det": [("big", 0.1, "object_adj"), ("small", 0.1, "object_adj"), ("red", 0.05, "object_adj"),
                           ("cat", 0.2, "clause_end"), ("dog", 0.2, "clause_end"), ("bird", 0.15, "clause_end"),
                           ("ball", 0.2, "clause_end")],
            "object_adj": [(w, p, "clause_end") for w, p in things],
            "clause_end": [(".", 0.6, "stop"), ("and", 0.2, "sentence"), ("near", 0.1, "object"), ("with", 0.1, "object")],
            "stop": [(END, 1.0, None)],
        },
        start="sentence",
    )
