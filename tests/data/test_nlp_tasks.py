"""The generated language tasks: labels follow their rule, order and context matter, BIO spans and
entity scores by hand, few-shot documents, and BERT's masking statistics."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nptransformer.data import (
    AMBIGUOUS_NAMES,
    MASK_ID,
    NER_TAGS,
    SPECIAL_TOKENS,
    WordTokenizer,
    bio_spans,
    entity_scores,
    few_shot_document,
    few_shot_documents,
    few_shot_vocabulary,
    mask_tokens,
    ner_examples,
    ner_vocabulary,
    RATING_PREFIX,
    RATING_WORDS,
    review_corpus,
    sentiment_examples,
    sentiment_label,
    sentiment_vocabulary,
)


# --------------------------------------------------------------------------- sentiment
def test_sentiment_labels_follow_the_rule_and_are_balanced():
    examples = sentiment_examples(2000, seed=0)
    assert all(sentiment_label(tokens) == label for tokens, label in examples)
    assert 0.45 < np.mean([y for _, y in examples]) < 0.55
    assert examples == sentiment_examples(2000, seed=0)
    vocab = set(sentiment_vocabulary())
    assert all(set(tokens) <= vocab for tokens, _ in examples)


@pytest.mark.parametrize("review,label", [
    ("the food was good", 1),
    ("the food was not good", 0),
    ("the food was not bad", 1),
    ("the food was very good but the staff was rude", 0),
    ("the staff was rude but the food was very good", 1),
    ("although the room was dirty , the view was lovely", 1),
    ("the view was lovely although the room was dirty", 1),
    ("the view was not lovely although the room was not dirty", 0),
])
def test_sentiment_rule_by_hand(review, label):
    assert sentiment_label(review.split()) == label


def test_word_order_decides_some_labels():
    """Some reviews have the same bag of words as another review with the opposite label, so no
    bag-of-words classifier can get them all right."""
    examples = sentiment_examples(3000, seed=1, forms=["but"])
    by_bag = {}
    for tokens, label in examples:
        by_bag.setdefault(tuple(sorted(tokens)), set()).add(label)
    assert sum(len(labels) == 2 for labels in by_bag.values()) > 0


def test_review_corpus_rates_some_reviews_by_their_label():
    corpus = review_corpus(2000, seed=3, rating_rate=0.3)
    tail = len(RATING_PREFIX) + 1
    rated = [r for r in corpus if tuple(r[-tail:-1]) == RATING_PREFIX and r[-1] in RATING_WORDS]
    assert abs(len(rated) / len(corpus) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(corpus))
    for review in rated:
        assert RATING_WORDS[sentiment_label(review[:-tail])] == review[-1]
    unrated = [r for r in corpus if r not in rated]
    assert all(sentiment_label(r) in (0, 1) for r in unrated)  # plain reviews, nothing appended
    assert set(w for r in corpus for w in r) <= set(sentiment_vocabulary())
    assert [r[:len(r) - tail] if r in rated else r for r in corpus] == [t for t, _ in sentiment_examples(2000, 3)]


def test_negation_rate():
    assert not any("not" in t for t, _ in sentiment_examples(300, seed=0, negation_rate=0.0))
    negated = np.mean(["not" in t for t, _ in sentiment_examples(1000, seed=0, forms=["single"], negation_rate=1.0)])
    assert negated == 1.0


def test_sentiment_rejects_unknown_forms_and_ill_formed_reviews():
    with pytest.raises(ValueError, match="unknown or no forms"):
        sentiment_examples(3, seed=0, forms=["sarcasm"])
    with pytest.raises(ValueError, match="clauses .* disagree"):
        sentiment_label("the food was good and the staff was rude".split())
    with pytest.raises(ValueError, match="exactly one sentiment word"):
        sentiment_label("the food was".split())


# --------------------------------------------------------------------------- named entities
def test_ner_tags_are_well_formed_bio():
    examples = ner_examples(1000, seed=0)
    vocab = set(ner_vocabulary())
    for tokens, tags in examples:
        assert len(tokens) == len(tags) and set(tokens) <= vocab and set(tags) <= set(NER_TAGS)
        for prev, tag in zip(["O"] + tags, tags):
            if tag.startswith("I-"):
                assert prev[2:] == tag[2:], (tokens, tags)  # an I- always continues its entity


def test_ambiguous_names_take_every_tag_their_context_allows():
    seen = {w: Counter() for w in AMBIGUOUS_NAMES}
    for tokens, tags in ner_examples(3000, seed=2):
        for w, t in zip(tokens, tags):
            if w in seen:
                seen[w][t.partition("-")[2] or "O"] += 1
    for word, kinds in AMBIGUOUS_NAMES.items():
        assert set(seen[word]) == set(kinds), (word, seen[word])


def test_bio_spans_and_entity_scores_by_hand():
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"]) == {("PER", 0, 2), ("LOC", 3, 6)}
    assert bio_spans(["I-ORG", "I-ORG", "B-ORG", "O"]) == {("ORG", 0, 2), ("ORG", 2, 3)}  # a stray I- starts one
    assert bio_spans(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-PER"]]
    # true entities: PER 0-2, LOC 3-4, ORG 0-1 (3); predicted: PER 0-1, LOC 3-4, ORG 0-1, PER 1-2 (4);
    # correct: LOC and ORG (2). precision 2/4, recall 2/3, F1 = 2 * (1/2 * 2/3) / (1/2 + 2/3) = 4/7
    scores = entity_scores(true, pred)
    assert scores == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})
    with pytest.raises(ValueError, match="sentence 0 has 4 true tags but 3"):
        entity_scores(true[:1], [pred[0][:3]])


# --------------------------------------------------------------------------- few-shot documents
def test_few_shot_document_format():
    examples = [("the food was good".split(), 1), ("the room was not nice".split(), 0)]
    doc = few_shot_document(examples, ("down", "up"))
    assert " ".join(doc) == "the food was good : up ; the room was not nice : down ;"


def test_few_shot_documents_change_label_words_and_their_meaning():
    docs = few_shot_documents(400, seed=0, examples_per_document=4)
    tokenizer = WordTokenizer(few_shot_vocabulary())
    assert all(tokenizer.unk_id not in tokenizer.encode(" ".join(d)) for d in docs)
    positive_word = Counter()
    for doc in docs:
        text = " ".join(doc)
        reviews = [r.split(" : ") for r in text.split(" ;") if r.strip()]
        assert len(reviews) == 4
        words = {sentiment_label(r.split()): w for r, w in reviews}
        assert len(set(words.values())) == len(words)  # one word per label inside a document
        if 1 in words:
            positive_word[words[1]] += 1
    assert len(positive_word) == 12  # every word of every pair means "positive" in some document
    assert max(positive_word.values()) < 0.2 * sum(positive_word.values())


# --------------------------------------------------------------------------- BERT's masking
def test_mask_tokens_is_15_percent_then_80_10_10():
    rng = np.random.default_rng(0)
    V, first = 50, len(SPECIAL_TOKENS)
    ids = rng.integers(first, V, size=(400, 100))
    ids[:, 0], ids[:, -10:] = 5, 0  # <cls> and padding are never chosen
    inputs, labels = mask_tokens(ids, rng, V, MASK_ID)
    chosen = labels != -100
    regular = ids >= first
    assert not chosen[~regular].any() and (inputs[~regular] == ids[~regular]).all()
    assert (labels[chosen] == ids[chosen]).all() and (inputs[~chosen] == ids[~chosen]).all()
    n = regular.sum()  # 400 * 89 = 35,600 candidates: 15 % +- 4 standard deviations
    assert abs(chosen.sum() / n - 0.15) < 4 * np.sqrt(0.15 * 0.85 / n)
    k = chosen.sum()
    masked = (inputs[chosen] == MASK_ID).mean()
    unchanged = (inputs[chosen] == ids[chosen]).mean()  # 10 %, plus random draws of the same token
    random = 1 - masked - unchanged
    p_same = 1 / (V - first)
    for observed, p in ((masked, 0.8), (random, 0.1 * (1 - p_same)), (unchanged, 0.1 + 0.1 * p_same)):
        assert abs(observed - p) < 4 * np.sqrt(p * (1 - p) / k), (observed, p)
    assert ((inputs[chosen] >= first) | (inputs[chosen] == MASK_ID)).all()  # no special token drawn


def test_mask_tokens_checks_its_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="integers"):
        mask_tokens(np.zeros((2, 3)), rng, 50, MASK_ID)
    with pytest.raises(ValueError, match="no regular token"):
        mask_tokens(np.zeros((2, 3), dtype=np.int64), rng, 7, MASK_ID)
