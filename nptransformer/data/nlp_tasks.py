"""Generated language tasks for pre-training and fine-tuning, each with a rule that decides the answer.

- ``sentiment_examples``: restaurant-style reviews labelled negative (0) or positive (1). The label
  depends on **negation** ("was not good" is negative, "was not bad" positive) and on **word order**
  ("the food was good but the staff was rude" is negative, "the staff was rude but the food was
  good" positive: the same bag of words, opposite labels). ``sentiment_label`` states the rule
  and recomputes any label from the words alone.
- ``ner_examples``: sentences with person, location and organization names tagged in the BIO
  scheme. A few names are ambiguous (``jordan`` and ``washington`` are people or places, ``apple``
  a company or a fruit): only the context tells which, so a model must read it.
- ``few_shot_document`` / ``few_shot_documents``: reviews followed by a label word, several in a
  row, with label words that change from document to document. A language model trained on them
  can only predict a label word from the examples before it: in-context learning.
- ``mask_tokens``: BERT's masked-language-model corruption (15 % of the tokens; of those 80 %
  become ``<mask>``, 10 % a random token, 10 % stay as they are).

Every generator takes ``(n, seed)`` and returns the same examples for the same arguments. Tokens
are lower-case words and punctuation marks, so ``WordTokenizer(sentiment_vocabulary())`` (or
``ner_vocabulary()``) encodes them without ``<unk>``.
"""
from __future__ import annotations

import numpy as np

from .tasks import _check_count
from .tokenizers import SPECIAL_TOKENS

# ====================================================================== sentiment
SENTIMENT_ASPECTS = ("food", "service", "staff", "room", "price", "music", "view", "coffee", "menu", "bed")
POSITIVE_WORDS = ("good", "great", "excellent", "lovely", "friendly", "tasty", "perfect", "nice")
NEGATIVE_WORDS = ("bad", "awful", "terrible", "poor", "rude", "bland", "dirty", "slow")
INTENSIFIERS = ("very", "really", "quite")
LINKING_VERBS = ("was", "is", "seemed")
REVIEW_FORMS = {  # form -> probability; the main clause (the one that decides the label) is marked *
    "single": 0.3,  # *A
    "and": 0.2,  # *A and *B, both with the label's polarity
    "but": 0.2,  # A but *B: the clause after "but" decides
    "although_first": 0.15,  # although A , *B
    "although_last": 0.15,  # *A although B
}
_CONNECTIVES = ("and", "but", "although", ",")
RATING_PREFIX = (".",)
RATING_WORDS = ("one", "five")
"""``review_corpus`` ends some reviews with ``. one`` (label 0) or ``. five`` (label 1), a star
rating: the word that differs comes last, so neither a next-word nor a masked-word predictor can
read it off a neighbour; it has to be worked out from the review."""


def sentiment_vocabulary() -> list[str]:
    """Every token a review (rated or not) can contain, sorted."""
    words = {"the", "not", *SENTIMENT_ASPECTS, *POSITIVE_WORDS, *NEGATIVE_WORDS, *INTENSIFIERS, *LINKING_VERBS}
    return sorted(words | set(_CONNECTIVES) | set(RATING_PREFIX) | set(RATING_WORDS))


def _clause(rng, polarity: int, negation_rate: float) -> list[str]:
    """"the <aspect> <verb> [not] [<intensifier>] <adjective>" whose meaning has ``polarity`` (+1/-1):
    a negated clause (probability ``negation_rate``) takes an adjective of the opposite polarity."""
    negated = rng.random() < negation_rate
    words = NEGATIVE_WORDS if (polarity > 0) == negated else POSITIVE_WORDS
    clause = ["the", SENTIMENT_ASPECTS[rng.integers(len(SENTIMENT_ASPECTS))], LINKING_VERBS[rng.integers(len(LINKING_VERBS))]]
    if negated:
        clause.append("not")
    if rng.random() < 0.3:
        clause.append(INTENSIFIERS[rng.integers(len(INTENSIFIERS))])
    return clause + [words[rng.integers(len(words))]]


def _review(rng, form: str, label: int, negation_rate: float) -> list[str]:
    s = 1 if label == 1 else -1

    def clause(polarity):
        return _clause(rng, polarity, negation_rate)

    if form == "single":
        return clause(s)
    if form == "and":
        return clause(s) + ["and"] + clause(s)
    if form == "but":
        return clause(-s) + ["but"] + clause(s)
    if form == "although_first":
        return ["although"] + clause(-s) + [","] + clause(s)
    return clause(s) + ["although"] + clause(-s)


def sentiment_examples(n: int, seed: int, forms=None, negation_rate: float = 0.4) -> list[tuple[list[str], int]]:
    """``n`` (review tokens, label) pairs; label 1 is positive, 0 negative, each with probability 1/2.

    The form of each review is drawn from ``forms`` (default: all of ``REVIEW_FORMS``, with their
    probabilities; a list of names draws uniformly among them); each clause is negated with
    probability ``negation_rate``. ``sentiment_label(tokens)`` recomputes every label from the tokens.
    """
    _check_count("sentiment_examples", n)
    if not 0.0 <= negation_rate <= 1.0:
        raise ValueError(f"sentiment_examples: negation_rate must be in [0, 1], got {negation_rate}")
    if forms is None:
        names, probs = list(REVIEW_FORMS), list(REVIEW_FORMS.values())
    else:
        names = list(forms)
        unknown = [f for f in names if f not in REVIEW_FORMS]
        if unknown or not names:
            raise ValueError(f"sentiment_examples: unknown or no forms {unknown}; known forms: {list(REVIEW_FORMS)}")
        probs = [1 / len(names)] * len(names)
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        form = names[rng.choice(len(names), p=probs)]
        label = int(rng.integers(2))
        examples.append((_review(rng, form, label, negation_rate), label))
    return examples


def review_corpus(n: int, seed: int, rating_rate: float = 0.5, forms=None) -> list[list[str]]:
    """``n`` unlabelled reviews for pre-training, as found in the wild: a fraction ``rating_rate``
    of them ends with its star rating, ``. five`` or ``. one`` (``RATING_WORDS[label]``),
    the others with nothing. The reviews are ``sentiment_examples(n, seed, forms)``.

    The labels are never given as such; a language model meets them only as words to predict. It
    learns to predict the rating only by computing what decides the label: the main clause's
    polarity, negation and word order included. That is the signal pre-training can pass on.
    """
    if not 0.0 <= rating_rate <= 1.0:
        raise ValueError(f"review_corpus: rating_rate must be in [0, 1], got {rating_rate}")
    rng = np.random.default_rng((seed, 1))
    rated = rng.random(n) < rating_rate
    return [tokens + [*RATING_PREFIX, RATING_WORDS[label]] if r else tokens
            for (tokens, label), r in zip(sentiment_examples(n, seed, forms), rated.tolist())]


def _clause_polarity(clause: list[str], review) -> int:
    adjectives = [w for w in clause if w in POSITIVE_WORDS or w in NEGATIVE_WORDS]
    if len(adjectives) != 1:
        raise ValueError(f"sentiment_label: the clause {' '.join(clause)!r} of {' '.join(review)!r} "
                         f"needs exactly one sentiment word, it has {adjectives}")
    polarity = 1 if adjectives[0] in POSITIVE_WORDS else -1
    return -polarity if "not" in clause else polarity


def sentiment_label(tokens) -> int:
    """The label of a review by the task's rule, from its words alone (1 positive, 0 negative).

    A clause's polarity is its sentiment word's (good +1, bad -1), flipped by "not". The review's
    label is the polarity of its main clause: the only clause; either clause of "A and B" (they
    agree); B in "A but B"; in "although A , B" and in "B although A" the clause that "although"
    does not introduce, B.

    >>> sentiment_label("the food was not bad but the staff was rude".split())
    0
    >>> sentiment_label("the staff was rude but the food was not bad".split())
    1
    """
    tokens = list(tokens)
    if "but" in tokens:
        main = tokens[tokens.index("but") + 1:]
    elif tokens[:1] == ["although"]:
        if "," not in tokens:
            raise ValueError(f"sentiment_label: {' '.join(tokens)!r} starts with 'although' but has no ','")
        main = tokens[tokens.index(",") + 1:]
    elif "although" in tokens:
        main = tokens[:tokens.index("although")]
    elif "and" in tokens:
        first, second = tokens[:tokens.index("and")], tokens[tokens.index("and") + 1:]
        if _clause_polarity(first, tokens) != _clause_polarity(second, tokens):
            raise ValueError(f"sentiment_label: the clauses of {' '.join(tokens)!r} disagree; 'and' joins agreeing clauses")
        main = first
    else:
        main = tokens
    return 1 if _clause_polarity(main, tokens) > 0 else 0


# ====================================================================== named entities
NER_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
FIRST_NAMES = ("alice", "bob", "carol", "david", "emma", "frank", "grace", "henry", "maria", "omar")
SURNAMES = ("smith", "jones", "brown", "garcia", "chen")
PLACES = ("paris", "london", "tokyo", "berlin", "cairo", "lima", "oslo", "new york", "san francisco", "hong kong")
ORGANIZATIONS = ("acme", "globex", "initech", "acme corp", "bank of england", "red cross", "united nations")
AMBIGUOUS_NAMES = {"jordan": ("PER", "LOC"), "washington": ("PER", "LOC"), "apple": ("ORG", "O")}
"""Words whose tag only the context decides: a person or a place, a company or a fruit."""
_AMBIGUOUS_RATE = 0.2  # how often a PER, LOC or ORG slot takes an ambiguous name
NER_TEMPLATES = (
    "{PER} works for {ORG} in {LOC} .",
    "{PER} flew to {LOC} on monday .",
    "{ORG} opened an office in {LOC} .",
    "{PER} met {PER} at {ORG} .",
    "{PER} ate an apple in {LOC} .",
    "{PER} visited {LOC} with {PER} .",
    "the ceo of {ORG} is {PER} .",
    "{LOC} is far from {LOC} .",
    "{PER} bought an apple from {PER} .",
    "{PER} said that {ORG} will hire {PER} .",
    "yesterday {PER} left {LOC} for {LOC} .",
    "{ORG} sold apple juice in {LOC} .",
)


def ner_vocabulary() -> list[str]:
    """Every token an ``ner_examples`` sentence can contain, sorted."""
    words = set(FIRST_NAMES) | set(SURNAMES) | set(AMBIGUOUS_NAMES)
    for name in PLACES + ORGANIZATIONS:
        words.update(name.split())
    for template in NER_TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    return sorted(words)


def _entity(rng, kind: str) -> list[str]:
    if rng.random() < _AMBIGUOUS_RATE:
        choices = [w for w, kinds in AMBIGUOUS_NAMES.items() if kind in kinds]
        return [choices[rng.integers(len(choices))]]
    if kind == "PER":
        name = [FIRST_NAMES[rng.integers(len(FIRST_NAMES))]]
        return name + [SURNAMES[rng.integers(len(SURNAMES))]] if rng.random() < 0.4 else name
    names = PLACES if kind == "LOC" else ORGANIZATIONS
    return names[rng.integers(len(names))].split()


def ner_examples(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n`` (tokens, BIO tags) pairs: a template of ``NER_TEMPLATES`` with its slots filled.

    An entity of type X is tagged ``B-X`` on its first word and ``I-X`` on the others ("bank of
    england": B-ORG I-ORG I-ORG); every other token is ``O``. One slot in five takes an
    ambiguous name (``AMBIGUOUS_NAMES``), so "jordan" is B-PER in "jordan met ..." and B-LOC in
    "... flew to jordan", and "apple" is O outside an organization slot.
    """
    _check_count("ner_examples", n)
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        tokens, tags = [], []
        for word in NER_TEMPLATES[rng.integers(len(NER_TEMPLATES))].split():
            if word.startswith("{"):
                kind = word[1:-1]
                entity = _entity(rng, kind)
                tokens += entity
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
            else:
                tokens.append(word)
                tags.append("O")
        examples.append((tokens, tags))
    return examples


def bio_spans(tags) -> set[tuple[str, int, int]]:
    """The entities of a BIO tag sequence as ``(type, start, end)`` with ``end`` exclusive.

    An entity starts at ``B-X`` and goes on over the ``I-X`` that follow. An ``I-X`` that does not
    continue an entity of type X starts a new one (the rule of the CoNLL evaluation script), so a
    model's ill-formed output is still scored.

    >>> sorted(bio_spans(["B-PER", "I-PER", "O", "B-LOC", "I-ORG"]))
    [('LOC', 3, 4), ('ORG', 4, 5), ('PER', 0, 2)]
    """
    spans, kind, start = set(), None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-")
        if kind is not None and not (prefix == "I" and label == kind):
            spans.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, start = label, i
    return spans


def entity_scores(true_tags, predicted_tags) -> dict:
    """Micro-averaged entity precision, recall and F1 over sentences: an entity counts as found
    only when its type, start and end all match (the CoNLL-2003 measure)."""
    true_tags, predicted_tags = list(true_tags), list(predicted_tags)
    if len(true_tags) != len(predicted_tags):
        raise ValueError(f"entity_scores: {len(true_tags)} true tag sequences but {len(predicted_tags)} predicted")
    found = correct = gold = 0
    for i, (t, p) in enumerate(zip(true_tags, predicted_tags)):
        if len(t) != len(p):
            raise ValueError(f"entity_scores: sentence {i} has {len(t)} true tags but {len(p)} predicted")
        t, p = bio_spans(t), bio_spans(p)
        gold, found, correct = gold + len(t), found + len(p), correct + len(t & p)
    precision = correct / found if found else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# ====================================================================== few-shot documents
FEW_SHOT_LABEL_WORDS = (("no", "yes"), ("neg", "pos"), ("down", "up"), ("false", "true"), ("blue", "red"),
                        ("left", "right"))
"""(word for negative, word for positive) pairs; a document uses one pair, in either order."""
FEW_SHOT_SEPARATORS = (":", ";")  # review : label ; review : label ; ...


def few_shot_vocabulary() -> list[str]:
    """Every token of a few-shot document: the reviews' words, the label words and separators."""
    words = set(sentiment_vocabulary()) | set(FEW_SHOT_SEPARATORS)
    words.update(w for pair in FEW_SHOT_LABEL_WORDS for w in pair)
    return sorted(words)


def few_shot_document(examples, label_words) -> list[str]:
    """``review : word ; review : word ; ...`` with ``label_words[label]`` after each review.

    ``examples`` are (review tokens, label) pairs; ``label_words`` is (word for label 0, word for
    label 1). A prompt for k-shot classification is the document of k examples followed by the
    query's review and ``:``; the answer is the word that comes next.
    """
    document = []
    for tokens, label in examples:
        document += list(tokens) + [":", label_words[label], ";"]
    return document


def few_shot_documents(n: int, seed: int, examples_per_document: int = 8, forms=None,
                       negation_rate: float = 0.4) -> list[list[str]]:
    """``n`` documents of ``examples_per_document`` labelled reviews each.

    Each document draws its own pair of label words from ``FEW_SHOT_LABEL_WORDS`` and, with
    probability 1/2, swaps it, so no word means "positive" across documents: before its first
    example a document gives no clue which word will follow a positive review, and after a few
    it does. The reviews are ``sentiment_examples(..., forms, negation_rate)``.
    """
    _check_count("few_shot_documents", n)
    if examples_per_document < 1:
        raise ValueError(f"few_shot_documents: examples_per_document must be >= 1, got {examples_per_document}")
    rng = np.random.default_rng(seed)
    reviews = sentiment_examples(n * examples_per_document, int(rng.integers(2**31)), forms, negation_rate)
    documents = []
    for i in range(n):
        pair = FEW_SHOT_LABEL_WORDS[rng.integers(len(FEW_SHOT_LABEL_WORDS))]
        words = pair[::-1] if rng.random() < 0.5 else pair
        documents.append(few_shot_document(reviews[i * examples_per_document:(i + 1) * examples_per_document], words))
    return documents


# ====================================================================== BERT's masking
def mask_tokens(ids, rng, vocab_size: int, mask_id: int, mask_prob: float = 0.15, ignore_index: int = -100):
    """BERT's masked-LM corruption of a batch of ids (Devlin et al. 2019, section 3.1).

    Every position that holds a regular token (an id at or above ``len(SPECIAL_TOKENS)``, so
    never padding, ``<cls>`` or ``<sep>``) is chosen independently with probability
    ``mask_prob``. A chosen position becomes ``mask_id`` with probability 0.8, a random regular
    token (uniform over ``[len(SPECIAL_TOKENS), vocab_size)``, which can be the original) with
    probability 0.1, and stays as it is with probability 0.1. The model must predict the original
    token at every chosen position, and only there.

    Returns ``(inputs, labels)``, both shaped like ``ids``: ``labels`` holds the original id at
    the chosen positions and ``ignore_index`` everywhere else (the ``cross_entropy`` convention).
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"mask_tokens: ids must be integers, got dtype {ids.dtype}")
    first = len(SPECIAL_TOKENS)
    if vocab_size <= first:
        raise ValueError(f"mask_tokens: vocab_size {vocab_size} leaves no regular token (ids from {first} on)")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_tokens: mask_prob must be in (0, 1), got {mask_prob}")
    chosen = (ids >= first) & (rng.random(ids.shape) < mask_prob)
    action = rng.random(ids.shape)  # < 0.8: <mask>;  0.8 .. 0.9: random token;  >= 0.9: unchanged
    inputs = ids.copy()
    inputs[chosen & (action < 0.8)] = mask_id
    replaced = chosen & (action >= 0.8) & (action < 0.9)
    inputs[replaced] = rng.integers(first, vocab_size, size=int(replaced.sum()))
    labels = np.where(chosen, ids, ignore_index)
    return inputs, labels
