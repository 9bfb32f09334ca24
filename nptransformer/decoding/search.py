"""Decoding on a plain scorer: greedy, exhaustive and beam search, their penalties, and sampling.

Every search here reaches the model through one function, the *scorer*::

    log_prob_fn(prefixes: list[list[int]]) -> array of shape (n, V)

Row ``i`` holds the log-probabilities of the next token after ``prefixes[i]``; every prefix
starts with ``bos_id``. A scorer that sees all the prefixes of one step in ONE call is what
makes beam search fast on a real model: one batched forward pass per step, not one per beam.
So the searches can be tested without any model, with a table or a seeded random function.

Conventions shared by every function in this module:

* Returned token lists do NOT include ``bos_id`` and DO end with ``eos_id`` when the search
  produced it. A hypothesis that reached ``max_len`` tokens without EOS is returned as it is.
* ``max_len`` counts generated tokens, EOS included, BOS not.
* The penalties (repetition, n-gram blocking) look only at the generated tokens, never at BOS:
  BOS is a fixed marker, not a choice of the model, and with the common ``bos_id == eos_id``
  convention counting it would penalize ending the sequence from the first step on.
* A scorer that returns the wrong shape, NaN, ``+inf`` or rows that are not normalized
  (``logsumexp`` not ~0: logits instead of log-probabilities) gets a ValueError that names the
  calling function. ``-inf`` is allowed: it marks a token of probability zero.

The algorithms, the penalties with hand-computed examples, and how the fairseq, GNMT and Hugging
Face conventions differ are written out in docs/decoding.md.
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from ..backend import to_device

LENGTH_PENALTY_STYLES = ("hf", "gnmt", "fairseq")

# A row of log-probabilities must have logsumexp within this of 0. Generous enough for float32
# log_softmax over a large vocabulary (its error is ~1e-6), tight enough to catch raw logits.
NORMALIZATION_ATOL = 1e-3
# The same bound on the sum of the probabilities: exp(-atol) <= sum(exp(row)) <= exp(atol).
_PROBABILITY_SUM_BOUNDS = (math.exp(-NORMALIZATION_ATOL), math.exp(NORMALIZATION_ATOL))

# exhaustive_search refuses to send more prefixes than this to the scorer in one step.
EXHAUSTIVE_MAX_PREFIXES = 100_000


# --------------------------------------------------------------------------- small pieces
def _check_int(fn, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_real(fn, name, value, ok, expected):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}")
    return float(value)


def _logsumexp(x):
    """log sum exp along the last axis (keepdims), exact for rows that hold -inf or are all -inf."""
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):  # an all -inf row: log 0 = -inf, which is the right answer
        return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _log_normalize(x):
    """x - logsumexp(x) along the last axis; an all -inf row stays all -inf (no NaN)."""
    lse = _logsumexp(x)
    return x - np.where(np.isfinite(lse), lse, 0.0)


def length_normalizer(n, alpha, style="hf"):
    """The number a hypothesis' summed log-probability is divided by: its length penalty.

    ``n`` is the generated length (EOS counted, BOS not). With ``alpha == 0`` every style gives 1
    (no normalization); ``alpha > 0`` favours longer hypotheses (their negative sums shrink).

    * ``"hf"``:      ``n ** alpha``                (Hugging Face ``length_penalty``)
    * ``"gnmt"``:    ``((5 + n) / 6) ** alpha``     (Wu et al. 2016, the GNMT paper)
    * ``"fairseq"``: ``n ** alpha``                 (fairseq ``--lenpen``); what differs from
      "hf" is not the formula but that fairseq forces EOS at the length limit, see beam_search.
    """
    if style not in LENGTH_PENALTY_STYLES:
        raise ValueError(f"length_normalizer: style must be one of {LENGTH_PENALTY_STYLES}, got {style!r}")
    if style == "gnmt":
        return ((5.0 + n) / 6.0) ** alpha
    return float(n) ** alpha


def apply_repetition_penalty(logits, generated_ids, penalty):
    """CTRL's repetition penalty (Keskar et al. 2019) as Hugging Face and most libraries apply it.

    For every DISTINCT token in ``generated_ids`` (a token generated twice is penalized once):
    its logit is divided by ``penalty`` when positive and multiplied by it when negative (zero
    stays zero). ``penalty > 1`` discourages repeats, ``penalty < 1`` encourages them.

    ``logits`` is a (V,) row with ``generated_ids`` a list of ints, or an (n, V) array with one
    list per row. Returns a new float array; the input is not modified.

    The result depends on where the logits sit, not only on the distribution they define
    (``(1, 2, 3)`` and ``(-2, -1, 0)`` give the same softmax but different penalized ones). On
    log-probabilities, which are all <= 0, it always multiplies: ``log p -> penalty * log p``,
    i.e. ``p -> p ** penalty`` before re-normalizing. That is how beam_search uses it.

    >>> apply_repetition_penalty([2, -1, 0.5, 3], [0, 1, 1], 2)
    array([ 1. , -2. ,  0.5,  3. ])
    """
    fn = "apply_repetition_penalty"
    penalty = _check_real(fn, "penalty", penalty, lambda p: p > 0, "a finite number > 0")
    x = np.array(logits)  # a copy: the caller's array is not modified
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"{fn}: logits must be a (V,) row or an (n, V) array with V >= 1, got shape {x.shape}")
    rows = x[None] if x.ndim == 1 else x
    id_lists = [generated_ids] if x.ndim == 1 else generated_ids
    if len(id_lists) != rows.shape[0]:
        raise ValueError(
            f"{fn}: logits of shape {x.shape} need one list of generated ids per row "
            f"({rows.shape[0]}), got {len(id_lists)}"
        )
    vocab_size = rows.shape[-1]
    for row, ids in zip(rows, id_lists):
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))  # distinct: once per token
        if ids.size and (ids[0] < 0 or ids[-1] >= vocab_size):
            raise ValueError(f"{fn}: generated ids must lie in [0, {vocab_size}), got {ids.tolist()}")
        picked = row[ids]
        row[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return x


def banned_ngram_tokens(tokens, ngram_size):
    """The tokens that would repeat an n-gram of ``tokens`` if generated next (sorted list).

    An n-gram is ``ngram_size`` consecutive tokens. The next token ``t`` is banned exactly when
    the last ``ngram_size - 1`` tokens followed by ``t`` already occur somewhere in ``tokens``.
    ``ngram_size == 1`` bans every token seen so far; ``ngram_size == 0`` bans nothing.

    >>> banned_ngram_tokens([1, 2, 3, 1, 2], 3)   # (1, 2) was followed by 3 before
    [3]
    """
    fn = "banned_ngram_tokens"
    n = _check_int(fn, "ngram_size", ngram_size, 0)
    tokens = [int(t) for t in tokens]
    if n == 0 or len(tokens) < n - 1:
        return []
    context = tuple(tokens[len(tokens) - (n - 1):])
    banned = {
        tokens[i + n - 1]
        for i in range(len(tokens) - n + 1)
        if tuple(tokens[i:i + n - 1]) == context
    }
    return sorted(banned)


def top_k_top_p_filter(log_probs, top_k=0, top_p=1.0):
    """Keep the tokens top-k and top-p (nucleus) sampling may draw; the others become -inf.

    Applied in Hugging Face's order: first top-k, then top-p on what top-k kept.

    * top-k keeps the ``top_k`` highest entries (ties with the k-th are kept too, as in HF);
      ``top_k == 0`` keeps all.
    * top-p keeps the smallest set of most probable tokens whose probabilities sum to at least
      ``top_p``: a token is kept when the tokens ranked above it sum to less than ``top_p``. The
      most probable token is always kept. ``top_p == 1`` keeps all.

    ``log_probs`` is a (V,) row (log-probabilities, or logits: only differences matter). Returns a
    new float64 row, not re-normalized.
    """
    fn = "top_k_top_p_filter"
    top_k = _check_int(fn, "top_k", top_k, 0)
    top_p = _check_real(fn, "top_p", top_p, lambda p: 0 < p <= 1, "in (0, 1]")
    x = np.array(log_probs, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{fn}: log_probs must be a non-empty (V,) row, got shape {x.shape}")
    if 0 < top_k < x.size:
        kth_largest = np.partition(x, x.size - top_k)[x.size - top_k]
        x[x < kth_largest] = -np.inf
    if top_p < 1.0:
        probs = np.exp(_log_normalize(x))
        order = np.argsort(-probs, kind="stable")  # most probable first
        mass_above = np.cumsum(probs[order]) - probs[order]
        x[order[mass_above >= top_p]] = -np.inf
    return x


# --------------------------------------------------------------------------- the scorer
class _CheckedScorer:
    """Calls the user's scorer and checks what comes back: (n, V), no NaN/+inf, rows normalized."""

    def __init__(self, fn, log_prob_fn, eos_id):
        if not callable(log_prob_fn):
            raise ValueError(f"{fn}: log_prob_fn must be callable (prefixes -> (n, V) log-probabilities), got {log_prob_fn!r}")
        self.fn = fn
        self.log_prob_fn = log_prob_fn
        self.eos_id = eos_id
        self.vocab_size = None

    def __call__(self, prefixes, *extra):
        fn, n = self.fn, len(prefixes)
        out = self.log_prob_fn(prefixes, *extra)
        try:
            log_probs = np.asarray(to_device(out, "cpu"), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{fn}: log_prob_fn must return an array of shape ({n}, V), got {type(out).__name__} ({exc})"
            ) from None
        if log_probs.ndim != 2 or log_probs.shape[0] != n or log_probs.shape[1] == 0:
            raise ValueError(
                f"{fn}: log_prob_fn returned shape {log_probs.shape} for {n} prefixes; expected ({n}, V): "
                f"one row of next-token log-probabilities per prefix"
            )
        if self.vocab_size is None:
            self.vocab_size = log_probs.shape[1]
            if self.eos_id >= self.vocab_size:
                raise ValueError(
                    f"{fn}: eos_id={self.eos_id} is outside the vocabulary: log_prob_fn returned "
                    f"V={self.vocab_size} columns; expected 0 <= eos_id < {self.vocab_size}"
                )
        elif log_probs.shape[1] != self.vocab_size:
            raise ValueError(
                f"{fn}: log_prob_fn returned {log_probs.shape[1]} columns, but V={self.vocab_size} before; "
                f"the vocabulary must not change during a search"
            )
        # One cheap test per call, which NaN, +inf and unnormalized rows all fail: each row's
        # probabilities must sum to 1 (within the bounds). Only a failing call pays for finding
        # out which it was.
        low, high = _PROBABILITY_SUM_BOUNDS
        with np.errstate(over="ignore"):  # raw logits can overflow exp: an inf sum fails the test
            total = np.exp(log_probs).sum(axis=-1)  # (n,)
        if not ((low <= total) & (total <= high)).all():
            self._check_rows(log_probs)
        return log_probs

    def _check_rows(self, log_probs):
        """The full test, for a call that failed the sum test: a ValueError for NaN or +inf, else
        for the first row whose logsumexp is not within NORMALIZATION_ATOL of 0 (a row whose sum
        fell just outside the bounds by rounding passes it)."""
        fn = self.fn
        if np.isnan(log_probs).any() or (log_probs == np.inf).any():
            raise ValueError(f"{fn}: log_prob_fn returned NaN or +inf; expected log-probabilities (finite or -inf)")
        lse = _logsumexp(log_probs)[:, 0]
        bad = np.flatnonzero(~(np.abs(lse) <= NORMALIZATION_ATOL))
        if bad.size:
            raise ValueError(
                f"{fn}: log_prob_fn returned rows that are not normalized: row {bad[0]} has logsumexp "
                f"{lse[bad[0]]:.6g}; expected 0 (within {NORMALIZATION_ATOL}): rows must be log-probabilities, "
                f"apply log_softmax to logits"
            )


@dataclasses.dataclass(frozen=True)
class _Scoring:
    """How a search turns the scorer's rows into step scores and finished hypotheses into scores."""

    eos_id: int
    length_penalty: float = 0.0
    style: str = "hf"
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def step_log_probs(self, log_probs, hyps, final_step):
        """The (n, V) log-probabilities the search adds to its running sums at this step.

        1. the repetition penalty on the scorer's log-probs (``p -> p ** penalty`` for tokens
           already generated), then n-gram blocking (banned tokens get -inf);
        2. re-normalization (log_softmax), so each step is again a distribution and a hypothesis'
           sum stays a log-probability (<= 0), which the stopping bound relies on;
        3. with the fairseq style, at the last step only EOS is allowed and keeps its log-prob.
        """
        if self.repetition_penalty != 1.0:
            log_probs = apply_repetition_penalty(log_probs, hyps, self.repetition_penalty)
        if self.no_repeat_ngram_size:
            for row, hyp in enumerate(hyps):
                log_probs[row, banned_ngram_tokens(hyp, self.no_repeat_ngram_size)] = -np.inf
        log_probs = _log_normalize(log_probs)
        if final_step and self.style == "fairseq":
            log_probs[:, :self.eos_id] = -np.inf
            log_probs[:, self.eos_id + 1:] = -np.inf
        return log_probs

    def normalizer(self, n):
        return length_normalizer(n, self.length_penalty, self.style)


def _check_scoring(fn, eos_id, length_penalty, length_penalty_style, repetition_penalty, no_repeat_ngram_size):
    if length_penalty_style not in LENGTH_PENALTY_STYLES:
        raise ValueError(f"{fn}: length_penalty_style must be one of {LENGTH_PENALTY_STYLES}, got {length_penalty_style!r}")
    return _Scoring(
        eos_id=eos_id,
        length_penalty=_check_real(fn, "length_penalty", length_penalty, lambda a: True, "a finite number"),
        style=length_penalty_style,
        repetition_penalty=_check_real(fn, "repetition_penalty", repetition_penalty, lambda p: p > 0, "a finite number > 0"),
        no_repeat_ngram_size=_check_int(fn, "no_repeat_ngram_size", no_repeat_ngram_size, 0),
    )


def _check_ids(fn, bos_id, eos_id, max_len):
    return _check_int(fn, "bos_id", bos_id, 0), _check_int(fn, "eos_id", eos_id, 0), _check_int(fn, "max_len", max_len, 1)


# --------------------------------------------------------------------------- greedy
def greedy_search(log_prob_fn, bos_id, eos_id, max_len):
    """The most probable next token at every step, until EOS or ``max_len`` tokens.

    Returns the tokens (without BOS, with EOS when produced). One scorer call per step; ties go
    to the lowest token id.
    """
    fn = "greedy_search"
    bos_id, eos_id, max_len = _check_ids(fn, bos_id, eos_id, max_len)
    scorer = _CheckedScorer(fn, log_prob_fn, eos_id)
    tokens = []
    while len(tokens) < max_len:
        token = int(np.argmax(scorer([[bos_id, *tokens]])[0]))
        tokens.append(token)
        if token == eos_id:
            break
    return tokens


# --------------------------------------------------------------------------- exhaustive
def exhaustive_search(
    log_prob_fn,
    bos_id,
    eos_id,
    max_len,
    length_penalty=0.0,
    length_penalty_style="hf",
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
):
    """The best hypothesis by full enumeration: the reference beam search is tested against.

    Scores every complete hypothesis (ended by EOS, or by reaching ``max_len`` tokens) exactly as
    ``beam_search`` does, with the same options, and returns ``(tokens, score)`` of the best
    (ties: the first found, shorter before longer). One scorer call per length, holding every
    live prefix of that length, so it is only for tiny vocabularies and lengths: it refuses to
    send more than EXHAUSTIVE_MAX_PREFIXES prefixes in one call.
    """
    fn = "exhaustive_search"
    bos_id, eos_id, max_len = _check_ids(fn, bos_id, eos_id, max_len)
    scoring = _check_scoring(fn, eos_id, length_penalty, length_penalty_style, repetition_penalty, no_repeat_ngram_size)
    scorer = _CheckedScorer(fn, log_prob_fn, eos_id)
    best_tokens, best_score = None, -np.inf
    hyps, sums = [[]], np.zeros(1)
    for step in range(1, max_len + 1):
        final_step = step == max_len
        log_probs = scoring.step_log_probs(scorer([[bos_id, *h] for h in hyps]), hyps, final_step)
        totals = sums[:, None] + log_probs  # (n, V)
        ends = totals / scoring.normalizer(step)
        if not final_step:  # only EOS ends a hypothesis before the last step
            ends = np.where(np.arange(totals.shape[1]) == eos_id, ends, -np.inf)
        row, token = np.unravel_index(np.argmax(ends), ends.shape)
        if ends[row, token] > best_score:
            best_tokens, best_score = [*hyps[row], int(token)], float(ends[row, token])
        if final_step:
            break
        rows, tokens = np.nonzero(np.isfinite(totals))
        keep = tokens != eos_id
        rows, tokens = rows[keep], tokens[keep]
        if rows.size > EXHAUSTIVE_MAX_PREFIXES:
            raise ValueError(
                f"{fn}: enumerating length {step + 1} needs {rows.size} prefixes in one scorer call "
                f"(V={totals.shape[1]}, max_len={max_len}); exhaustive search is a reference for tiny "
                f"problems, limit {EXHAUSTIVE_MAX_PREFIXES}"
            )
        if rows.size == 0:
            break
        hyps = [[*hyps[r], int(t)] for r, t in zip(rows, tokens)]
        sums = totals[rows, tokens]
    if best_tokens is None:
        raise ValueError(f"{fn}: every hypothesis has probability zero (all continuations are -inf or banned)")
    return best_tokens, best_score


# --------------------------------------------------------------------------- beam search
def _ranked_candidates(totals, count):
    """Flat indices of the ``count`` best finite entries of ``totals``, best first (ties: lower index)."""
    flat = totals.ravel()
    if count < flat.size:
        top = np.argpartition(-flat, count - 1)[:count]
    else:
        top = np.arange(flat.size)
    top = top[np.lexsort((top, -flat[top]))]
    return top[np.isfinite(flat[top])]


def _keep_best(finished, capacity, tokens, score):
    """Add a finished hypothesis; keep the ``capacity`` best (an earlier one wins a tie)."""
    finished.append((tokens, score))
    finished.sort(key=lambda hyp: -hyp[1])  # stable: earlier first among equal scores
    del finished[capacity:]


def beam_search_batch(
    log_prob_fn,
    n_sources,
    bos_id,
    eos_id,
    beam_size,
    max_len,
    length_penalty=0.0,
    length_penalty_style="hf",
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    early_stopping=False,
    n_best=1,
):
    """Beam search for several sources at once, with ONE scorer call per step for all of them.

    ``log_prob_fn(prefixes, sources)`` gets every live prefix of every source and, parallel to
    it, ``sources[i]``: the source (0 .. n_sources-1) that prefix ``i`` belongs to, so a model
    can pick the right encoder output. Rows of one source are contiguous and each prefix extends
    a prefix of the previous call by one token. Returns, per source, the list beam_search
    returns. The options are those of beam_search.
    """
    fn = "beam_search_batch"
    n_sources = _check_int(fn, "n_sources", n_sources, 1)
    return _beam_search(fn, log_prob_fn, n_sources, True, bos_id, eos_id, beam_size, max_len, length_penalty,
                        length_penalty_style, repetition_penalty, no_repeat_ngram_size, early_stopping, n_best)


def beam_search(
    log_prob_fn,
    bos_id,
    eos_id,
    beam_size,
    max_len,
    length_penalty=0.0,
    length_penalty_style="hf",
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    early_stopping=False,
    n_best=1,
):
    """Beam search: keep the ``beam_size`` most probable unfinished prefixes at every step.

    Returns ``n_best`` pairs ``(tokens, score)``, best first (fewer only when fewer complete
    hypotheses exist). Tokens exclude BOS and end with EOS when produced.

    One step (as in Hugging Face's and fairseq's beam search):

    1. one scorer call with the live prefixes; the penalties adjust the rows and they are
       re-normalized (see ``_Scoring.step_log_probs``); each candidate's score is its prefix's
       summed log-probability plus the token's.
    2. candidates are ranked by that sum. An EOS candidate ranked within the first ``beam_size``
       becomes a finished hypothesis (an EOS ranked lower is dropped); the best ``beam_size``
       non-EOS candidates become the next beam. At step ``max_len`` those become finished too.
    3. a finished hypothesis of ``n`` tokens (EOS counted) scores
       ``sum / length_normalizer(n, length_penalty, length_penalty_style)``; the ``beam_size``
       best finished are kept.

    Styles: ``"hf"`` divides by ``n ** a``, ``"gnmt"`` by ``((5 + n) / 6) ** a``; ``"fairseq"``
    divides by ``n ** a`` and, as fairseq's generator does, allows only EOS at step ``max_len``, so
    every hypothesis ends with EOS and pays for it.

    Penalties: ``repetition_penalty`` is applied to the scorer's log-probabilities (all <= 0, so
    each already generated token's ``log p`` is multiplied by it: ``p -> p ** penalty``), then
    the row is re-normalized. ``no_repeat_ngram_size = n`` gives -inf to every token that would
    repeat an n-gram of the generated tokens (banned_ngram_tokens).

    Stopping, checked per source once ``beam_size`` hypotheses are finished:

    * ``early_stopping=True``: stop at once (Hugging Face's ``True``; what fairseq always does).
    * ``early_stopping=False``: stop only when no live prefix can still reach a score above the
      worst kept finished one. Sums only decrease, so a prefix with sum ``s`` at step ``t`` can
      reach at best ``s / d`` with ``d`` the larger of the normalizers of lengths ``t + 1`` and
      ``max_len``. This bound is exact, so the result is the one running to ``max_len`` would
      give (Hugging Face calls this ``"never"``; its ``False`` is a heuristic that assumes the
      current length, which can stop too early when ``length_penalty > 0``).

    With ``beam_size = 1`` and ``length_penalty = 0`` this is greedy search; with a beam as wide as
    the number of candidates it is exhaustive_search.
    """
    return _beam_search("beam_search", log_prob_fn, 1, False, bos_id, eos_id, beam_size, max_len, length_penalty,
                        length_penalty_style, repetition_penalty, no_repeat_ngram_size, early_stopping, n_best)[0]


def _beam_search(fn, log_prob_fn, n_sources, pass_sources, bos_id, eos_id, beam_size, max_len, length_penalty,
                 length_penalty_style, repetition_penalty, no_repeat_ngram_size, early_stopping, n_best):
    """The search behind beam_search (one source, scorer called with the prefixes only) and
    beam_search_batch (``pass_sources``: the scorer also gets each prefix's source)."""
    bos_id, eos_id, max_len = _check_ids(fn, bos_id, eos_id, max_len)
    beam_size = _check_int(fn, "beam_size", beam_size, 1)
    n_best = _check_int(fn, "n_best", n_best, 1)
    if n_best > beam_size:
        raise ValueError(f"{fn}: n_best={n_best} exceeds beam_size={beam_size}; at most beam_size hypotheses are kept")
    if not isinstance(early_stopping, bool):
        raise ValueError(f"{fn}: early_stopping must be True or False, got {early_stopping!r}")
    scoring = _check_scoring(fn, eos_id, length_penalty, length_penalty_style, repetition_penalty, no_repeat_ngram_size)
    scorer = _CheckedScorer(fn, log_prob_fn, eos_id)

    finished = [[] for _ in range(n_sources)]  # per source: [(tokens, score)], best first
    hyps = [[] for _ in range(n_sources)]  # live hypotheses, grouped by source
    sources = list(range(n_sources))
    sums = np.zeros(n_sources)  # summed step log-probs of each live hypothesis
    for step in range(1, max_len + 1):
        if not hyps:
            break
        final_step = step == max_len
        prefixes = [[bos_id, *h] for h in hyps]
        extra = (sources,) if pass_sources else ()
        log_probs = scoring.step_log_probs(scorer(prefixes, *extra), hyps, final_step)
        totals = sums[:, None] + log_probs  # (n, V)
        vocab_size = totals.shape[1]
        next_hyps, next_sources, next_sums = [], [], []
        start = 0
        while start < len(hyps):
            source = sources[start]
            stop = start + 1
            while stop < len(hyps) and sources[stop] == source:
                stop += 1
            kept = []  # (tokens, sum) of this source's next beam
            for rank, flat in enumerate(_ranked_candidates(totals[start:stop], 2 * beam_size)):
                row, token = divmod(int(flat), vocab_size)
                total = float(totals[start + row, token])
                tokens = [*hyps[start + row], token]
                if token == eos_id:
                    if rank < beam_size:
                        _keep_best(finished[source], beam_size, tokens, total / scoring.normalizer(step))
                    continue
                if final_step:
                    _keep_best(finished[source], beam_size, tokens, total / scoring.normalizer(step))
                kept.append((tokens, total))
                if len(kept) == beam_size:
                    break
            done = final_step or not kept
            if not done and len(finished[source]) == beam_size:
                best_sum = max(total for _, total in kept)
                reachable = max(best_sum / scoring.normalizer(step + 1), best_sum / scoring.normalizer(max_len))
                done = early_stopping or reachable <= finished[source][-1][1]
            if not done:
                for tokens, total in kept:
                    next_hyps.append(tokens)
                    next_sources.append(source)
                    next_sums.append(total)
            start = stop
        hyps, sources, sums = next_hyps, next_sources, np.array(next_sums)

    for source, hyps_of_source in enumerate(finished):
        if not hyps_of_source:
            where = f" (source {source})" if n_sources > 1 else ""
            raise ValueError(f"{fn}: no hypothesis has a finite score{where}: every continuation is -inf or banned")
    return [hyps_of_source[:n_best] for hyps_of_source in finished]


# --------------------------------------------------------------------------- sampling
def sample(log_prob_fn, bos_id, eos_id, max_len, temperature=1.0, top_k=0, top_p=1.0, seed=None):
    """Draw each next token at random, until EOS or ``max_len`` tokens. Returns the tokens.

    Each step: the scorer's log-probabilities are divided by ``temperature`` (on log-probs this
    is the same as on logits: softmax does not see a constant shift), filtered by top-k and then
    top-p (top_k_top_p_filter, Hugging Face's order and definitions), re-normalized, and one
    token is drawn. ``top_k=1`` is greedy search. ``seed`` is an int, None (fresh entropy) or a
    ``numpy.random.Generator`` to draw from (advanced in place).
    """
    fn = "sample"
    bos_id, eos_id, max_len = _check_ids(fn, bos_id, eos_id, max_len)
    temperature = _check_real(fn, "temperature", temperature, lambda t: t > 0, "a finite number > 0 (use greedy_search for 0)")
    top_k = _check_int(fn, "top_k", top_k, 0)
    top_p = _check_real(fn, "top_p", top_p, lambda p: 0 < p <= 1, "in (0, 1]")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    scorer = _CheckedScorer(fn, log_prob_fn, eos_id)
    tokens = []
    while len(tokens) < max_len:
        row = top_k_top_p_filter(scorer([[bos_id, *tokens]])[0] / temperature, top_k, top_p)
        probs = np.exp(_log_normalize(row))
        token = int(rng.choice(probs.size, p=probs))
        tokens.append(token)
        if token == eos_id:
            break
    return tokens
