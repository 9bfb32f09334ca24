"""The generation tasks: every target follows its rule, the rules by hand, determinism by seed,
vocabularies that cover everything, and one readable error for bad input."""
from __future__ import annotations

import doctest
from collections import Counter

import numpy as np
import pytest

from nptransformer.data import WordTokenizer
from nptransformer.data import generation_tasks
from nptransformer.data.generation_tasks import (
    CHAT_TURNS,
    EVENT_VERBS,
    FRENCH_NOUNS,
    QUESTIONS,
    REQUEST_SLOTS,
    assistant_reply,
    dialogue_pairs,
    dialogue_vocabulary,
    headline,
    parse_request,
    summary_pairs,
    summary_vocabulary,
    translate_to_french,
    translation_pairs,
    translation_vocabulary,
)

TASKS = {  # generator, rule, vocabulary
    "translation": (translation_pairs, translate_to_french, translation_vocabulary),
    "summary": (summary_pairs, headline, summary_vocabulary),
    "dialogue": (dialogue_pairs, assistant_reply, dialogue_vocabulary),
}


@pytest.mark.parametrize("task", TASKS)
def test_every_target_follows_the_rule(task):
    make, rule, _ = TASKS[task]
    for source, target in make(2000, seed=0):
        assert rule(source) == target, (source, target)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_pairs_other_seed_other_pairs(task):
    make = TASKS[task][0]
    assert make(200, seed=5) == make(200, seed=5)
    assert make(200, seed=5) != make(200, seed=6)
    assert make(50, seed=np.int64(5)) == make(200, seed=5)[:50]  # the first pairs do not depend on n
    assert make(0, seed=1) == []


@pytest.mark.parametrize("task", TASKS)
def test_the_vocabulary_covers_both_sides_and_decodes_exactly(task):
    make, _, vocabulary = TASKS[task]
    words = vocabulary()
    assert words == sorted(set(words))
    tokenizer = WordTokenizer(words)
    used = set()
    for source, target in make(2000, seed=1):
        for text in (source, target):
            ids = tokenizer.encode(text)
            assert tokenizer.unk_id not in ids and tokenizer.decode(ids) == text
            used.update(text.split())
    assert used == set(words)  # and every word of the vocabulary does occur


@pytest.mark.parametrize("task", TASKS)
def test_bad_arguments_raise_one_readable_error(task):
    make = TASKS[task][0]
    for n in (-1, 2.5, "3"):
        with pytest.raises(ValueError, match=rf"{make.__name__}: n must be a non-negative integer"):
            make(n, seed=0)


def test_bad_rates_and_counts():
    with pytest.raises(ValueError, match="translation_pairs: negation_rate must be a number in \\[0, 1\\], got 1.5"):
        translation_pairs(3, seed=0, negation_rate=1.5)
    with pytest.raises(ValueError, match="dialogue_pairs: missing_rate must be"):
        dialogue_pairs(3, seed=0, missing_rate=-0.1)
    with pytest.raises(ValueError, match="summary_pairs: max_fillers must be a non-negative integer, got -1"):
        summary_pairs(3, seed=0, max_fillers=-1)


def test_the_docstring_examples_hold():
    assert doctest.testmod(generation_tasks).failed == 0


# --------------------------------------------------------------------------- translation
@pytest.mark.parametrize("english,french", [
    ("the cat sees the dog .", "le chat voit le chien ."),
    ("the car sees the dog .", "la voiture voit le chien ."),
    ("the red car eats the green apple .", "la voiture rouge mange la pomme verte ."),
    ("the small white horse does not want the big black table .",
     "le petit cheval blanc ne veut pas la grande table noire ."),
    ("the girl takes the book under the pretty white house .",
     "la fille prend le livre sous la jolie maison blanche ."),
])
def test_translation_rule_by_hand(english, french):
    assert translate_to_french(english) == french


def test_translation_moves_words_and_agrees_in_gender():
    pairs = translation_pairs(2000, seed=2)
    reordered = sum(len(e.split()) == len(f.split()) and e.split()[:3] != f.split()[:3] for e, f in pairs)
    assert reordered > 100
    articles = Counter(f.split()[0] for _, f in pairs)
    assert set(articles) == {"le", "la"} and min(articles.values()) > 600
    for english, french in pairs:
        if "does" in english:
            words = french.split()
            assert words.index("pas") == words.index("ne") + 2  # ne <verb> pas
    assert {noun for e, _ in pairs for noun in e.split() if noun in FRENCH_NOUNS} == set(FRENCH_NOUNS)


def test_translation_rates():
    assert not any("does" in e for e, _ in translation_pairs(300, seed=0, negation_rate=0.0))
    assert all(len(e.split()) == 6 for e, _ in translation_pairs(300, seed=0, negation_rate=0.0, adjective_rate=0.0,
                                                                   phrase_rate=0.0))  # the cat sees the dog .


@pytest.mark.parametrize("sentence,expected", [
    ("the cat .", "a verb or 'does not' at word 2"),
    ("cat sees the dog .", "'the' at word 0"),
    ("the cat sees the tree .", "a noun at word 4, found 'tree'"),
    ("the cat sees the dog", "'.' at word 5, found the end"),
    ("the cat sees the dog . the", "nothing after '.' at word 6"),
])
def test_translation_rule_rejects_what_it_cannot_read(sentence, expected):
    with pytest.raises(ValueError, match=f"translate_to_french: cannot read .*expected {expected}"):
        translate_to_french(sentence)


# --------------------------------------------------------------------------- summaries
@pytest.mark.parametrize("report,title", [
    ("the mayor of paris opened a bridge .", "paris mayor opens bridge"),
    ("the crowd cheered . on monday , the zoo of cairo bought a rare panda for ten million dollars .",
     "cairo zoo buys panda"),
    ("the bank of oslo declined to comment . the school of rome won a prize . reporters in lima were surprised .",
     "rome school wins prize"),
])
def test_headline_rule_by_hand(report, title):
    assert headline(report) == title


def test_summaries_hide_the_event_among_distractors():
    pairs = summary_pairs(2000, seed=3)
    positions = Counter()
    distracted = 0
    for report, title in pairs:
        sentences = [s for s in report.split(" .") if s.strip()]
        event = [i for i, s in enumerate(sentences) if any(v in s.split() for v in EVENT_VERBS)]
        assert len(event) == 1 and len(title.split()) == 4
        positions[event[0]] += 1
        place = title.split()[0]
        other_places = [w for i, s in enumerate(sentences) if i != event[0] for w in s.split()
                        if w in generation_tasks.SUMMARY_PLACES and w != place]
        distracted += bool(other_places)
    assert set(positions) == {0, 1, 2}  # the event is not always first
    assert distracted > 200  # other sentences often name another place
    assert max(len(r.split()) for r, _ in summary_pairs(300, seed=0, max_fillers=0)) <= 16  # the event alone


@pytest.mark.parametrize("report,expected", [
    ("the crowd cheered .", "exactly one sentence with an event verb"),
    ("the mayor of paris opened a bridge . the zoo of rome sold a park .", "exactly one sentence"),
    ("the mayor of paris opened a bridge", "sentences that each end with '.'"),
    ("paris opened a bridge .", "the event 'paris opened a bridge': expected 'the <actor> of <place>"),
])
def test_headline_rule_rejects_what_it_cannot_read(report, expected):
    with pytest.raises(ValueError, match=f"headline: cannot read .*{expected}"):
        headline(report)


# --------------------------------------------------------------------------- dialogue
@pytest.mark.parametrize("turn,reply", [
    ("will it rain in oslo tomorrow ?", "here is the weather in oslo tomorrow ."),
    ("what is the weather in rome ?", "here is the weather in rome today ."),  # a default day
    ("how cold is it on friday ?", "for which city ?"),
    ("hello , book a table for four people at 7 pm please", "a table for four at 7 pm . is that right ?"),
    ("i need a table at 8 pm", "for how many people ?"),
    ("i need a table", "for how many people ?"),  # the first missing slot is asked for first
    ("i need a table for two", "at what time ?"),
    ("is there a train to lima on sunday ?", "a train to lima on sunday . shall i book it ?"),
    ("hi , book me a train on monday please", "where do you want to go ?"),
    ("hello", "hello ! how can i help you ?"),
    ("thanks a lot", "you are welcome !"),
    ("see you later", "goodbye , have a nice day !"),
])
def test_dialogue_rule_by_hand(turn, reply):
    assert assistant_reply(turn) == reply


def test_dialogue_covers_every_intent_and_every_question():
    pairs = dialogue_pairs(2000, seed=4)
    intents = Counter(parse_request(turn)[0] for turn, _ in pairs)
    assert set(intents) == set(REQUEST_SLOTS) | set(CHAT_TURNS)
    assert {reply for _, reply in pairs} >= set(QUESTIONS.values())
    greeted = [turn for turn, _ in pairs if turn.split()[0] in ("hello", "hi") and len(turn.split()) > 2]
    assert greeted and all(parse_request(t)[0] in REQUEST_SLOTS for t in greeted)  # a greeting is not the intent
    assert all(reply not in QUESTIONS.values() for _, reply in dialogue_pairs(300, seed=0, missing_rate=0.0))


@pytest.mark.parametrize("turn,expected", [
    ("book a table on the train", "asks for several things"),
    ("what time is it ?", "neither a request"),
    ("will it rain in oslo or rome ?", "several values for city"),
])
def test_dialogue_rule_rejects_what_it_cannot_read(turn, expected):
    with pytest.raises(ValueError, match=f"parse_request: .*{expected}"):
        assistant_reply(turn)
