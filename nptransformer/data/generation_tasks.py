"""Generation tasks with a rule for the right answer: toy translation, summaries and dialogue.

Each task pairs a source string with a target string, words separated by single spaces, so
``WordTokenizer(..._vocabulary())`` encodes both sides without ``<unk>`` and decodes them back
exactly. A rule function recomputes every target from its source's words alone, the way
``sentiment_label`` recomputes a review's label:

- ``translation_pairs``: English -> French on a small grammar with a lexicon.
  ``"the small red car does not see the cat ." -> "la petite voiture rouge ne voit pas le chat ."``
  The word order changes (most adjectives follow the noun, "not" becomes "ne ... pas" around
  the verb) and the article and adjectives agree with the French noun's gender, which the
  English does not show. Rule: ``translate_to_french``.
- ``summary_pairs``: a short news report -> a headline that keeps who did what.
  ``"it was a sunny day . yesterday , the mayor of lima opened a new bridge near the river ."
  -> "lima mayor opens bridge"``. The event can be any sentence of the report, and other
  sentences may name other places and the same kind of actor. Rule: ``headline``.
- ``dialogue_pairs``: a user's turn -> the reply of a small weather, restaurant and train
  assistant. ``"will it rain in oslo tomorrow ?" -> "here is the weather in oslo tomorrow ."``;
  a request with a missing detail gets a question back (``"i need a table for four" -> "at what
  time ?"``). Rules: ``parse_request`` (intent and slots) and ``assistant_reply``.

Every generator takes ``(n, seed)`` and returns the same pairs for the same arguments (NumPy's
``default_rng``). The generators build source and target side by side from one drawn structure;
the rule functions parse the source string on their own, so the tests can check one against the
other.
"""
from __future__ import annotations

import numpy as np

from .tasks import _check_count


def _check_rate(name: str, rate_name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: {rate_name} must be a number in [0, 1], got {value!r}")


def _pick(rng, options):
    return options[rng.integers(len(options))]


# ====================================================================== translation
FRENCH_NOUNS = {  # English noun -> (French noun, its gender)
    "cat": ("chat", "m"), "dog": ("chien", "m"), "book": ("livre", "m"), "garden": ("jardin", "m"),
    "horse": ("cheval", "m"), "car": ("voiture", "f"), "house": ("maison", "f"), "table": ("table", "f"),
    "girl": ("fille", "f"), "apple": ("pomme", "f"),
}
FRENCH_ADJECTIVES_BEFORE = {  # these few go before the noun in French, as in English: (masculine, feminine)
    "small": ("petit", "petite"), "big": ("grand", "grande"), "pretty": ("joli", "jolie"),
}
FRENCH_ADJECTIVES_AFTER = {  # colours follow the noun in French
    "red": ("rouge", "rouge"), "black": ("noir", "noire"), "green": ("vert", "verte"),
    "white": ("blanc", "blanche"),
}
FRENCH_VERBS = {  # English base form -> (English third person singular, French third person singular)
    "see": ("sees", "voit"), "eat": ("eats", "mange"), "find": ("finds", "trouve"), "take": ("takes", "prend"),
    "want": ("wants", "veut"),
}
FRENCH_PREPOSITIONS = {"in": "dans", "under": "sous", "with": "avec"}
FRENCH_ARTICLES = {"m": "le", "f": "la"}
_GENDER = {"m": 0, "f": 1}


def translation_vocabulary() -> list[str]:
    """Every word of an English source or a French target of ``translation_pairs``, sorted."""
    words = {"the", "does", "not", "ne", "pas", "."} | set(FRENCH_ARTICLES.values())
    words.update(FRENCH_NOUNS)
    words.update(french for french, _ in FRENCH_NOUNS.values())
    for table in (FRENCH_ADJECTIVES_BEFORE, FRENCH_ADJECTIVES_AFTER):
        words.update(table)
        words.update(form for forms in table.values() for form in forms)
    for base, (third, french) in FRENCH_VERBS.items():
        words.update((base, third, french))
    words.update(FRENCH_PREPOSITIONS)
    words.update(FRENCH_PREPOSITIONS.values())
    return sorted(words)


def _noun_phrase(rng, adjective_rate):
    """(English words, French words) of "the [size] [colour] noun", each adjective with
    probability ``adjective_rate``."""
    noun = _pick(rng, sorted(FRENCH_NOUNS))
    before = _pick(rng, sorted(FRENCH_ADJECTIVES_BEFORE)) if rng.random() < adjective_rate else None
    after = _pick(rng, sorted(FRENCH_ADJECTIVES_AFTER)) if rng.random() < adjective_rate else None
    french, gender = FRENCH_NOUNS[noun]
    g = _GENDER[gender]
    english = ["the", *([before] if before else []), *([after] if after else []), noun]
    return english, [FRENCH_ARTICLES[gender], *([FRENCH_ADJECTIVES_BEFORE[before][g]] if before else []), french,
                     *([FRENCH_ADJECTIVES_AFTER[after][g]] if after else [])]


def translation_pairs(n: int, seed: int, negation_rate: float = 0.3, adjective_rate: float = 0.3,
                      phrase_rate: float = 0.4) -> list[tuple[str, str]]:
    """``n`` pairs (English sentence, its French translation).

    An English sentence is ``subject verb object [preposition noun-phrase] .``; each noun phrase
    is ``the [size] [colour] noun``, each adjective present with probability ``adjective_rate``;
    the verb is negated (``does not see``) with probability ``negation_rate``; the prepositional
    phrase comes with probability ``phrase_rate``. ``translate_to_french`` states the rule and
    recomputes every target from its source.
    """
    name = "translation_pairs"
    _check_count(name, n)
    for rate_name, rate in (("negation_rate", negation_rate), ("adjective_rate", adjective_rate),
                            ("phrase_rate", phrase_rate)):
        _check_rate(name, rate_name, rate)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        subject, obj = _noun_phrase(rng, adjective_rate), _noun_phrase(rng, adjective_rate)
        verb = _pick(rng, sorted(FRENCH_VERBS))
        third, french_verb = FRENCH_VERBS[verb]
        if rng.random() < negation_rate:
            english, french = subject[0] + ["does", "not", verb], subject[1] + ["ne", french_verb, "pas"]
        else:
            english, french = subject[0] + [third], subject[1] + [french_verb]
        english, french = english + obj[0], french + obj[1]
        if rng.random() < phrase_rate:
            preposition = _pick(rng, sorted(FRENCH_PREPOSITIONS))
            place = _noun_phrase(rng, adjective_rate)
            english += [preposition, *place[0]]
            french += [FRENCH_PREPOSITIONS[preposition], *place[1]]
        pairs.append((" ".join(english + ["."]), " ".join(french + ["."])))
    return pairs


def translate_to_french(sentence: str) -> str:
    """The French translation of an English sentence of ``translation_pairs``, by rule.

    Each noun phrase ``the [adjectives] noun`` becomes the article of the French noun's gender
    (``le`` masculine, ``la`` feminine), the size adjectives (small, big, pretty) before the noun
    and the colours after it, each adjective in the noun's gender. ``sees`` becomes ``voit`` and
    ``does not see`` becomes ``ne voit pas``, the negation wrapped around the verb; ``in``,
    ``under`` and ``with`` become ``dans``, ``sous`` and ``avec``. Everything else keeps its
    place: subject, verb, object, prepositional phrase, full stop.

    >>> translate_to_french("the small red car does not see the cat .")
    'la petite voiture rouge ne voit pas le chat .'
    """
    words = sentence.split()
    position = 0

    def fail(expected):
        found = repr(words[position]) if position < len(words) else "the end"
        raise ValueError(f"translate_to_french: cannot read {sentence!r}: expected {expected} at word "
                         f"{position}, found {found}")

    def take(expected, allowed):
        nonlocal position
        if position >= len(words) or words[position] not in allowed:
            fail(expected)
        position += 1
        return words[position - 1]

    def noun_phrase():
        nonlocal position
        take("'the'", ("the",))
        before, after = [], []
        while position < len(words) and (words[position] in FRENCH_ADJECTIVES_BEFORE
                                         or words[position] in FRENCH_ADJECTIVES_AFTER):
            (before if words[position] in FRENCH_ADJECTIVES_BEFORE else after).append(words[position])
            position += 1
        french, gender = FRENCH_NOUNS[take("a noun", FRENCH_NOUNS)]
        g = _GENDER[gender]
        return [FRENCH_ARTICLES[gender], *(FRENCH_ADJECTIVES_BEFORE[a][g] for a in before), french,
                *(FRENCH_ADJECTIVES_AFTER[a][g] for a in after)]

    out = noun_phrase()
    third_person = {third: french for third, french in FRENCH_VERBS.values()}
    if words[position:position + 2] == ["does", "not"]:
        position += 2
        out += ["ne", FRENCH_VERBS[take("a verb", FRENCH_VERBS)][1], "pas"]
    else:
        out.append(third_person[take("a verb or 'does not'", third_person)])
    out += noun_phrase()
    if position < len(words) and words[position] in FRENCH_PREPOSITIONS:
        out.append(FRENCH_PREPOSITIONS[take("a preposition", FRENCH_PREPOSITIONS)])
        out += noun_phrase()
    take("'.'", (".",))
    if position != len(words):
        fail("nothing after '.'")
    return " ".join(out + ["."])


# ====================================================================== summaries
SUMMARY_ACTORS = ("mayor", "police", "zoo", "school", "museum", "bank", "council", "hospital")
SUMMARY_PLACES = ("paris", "london", "tokyo", "berlin", "cairo", "lima", "oslo", "rome")
EVENT_VERBS = {  # past tense (the report) -> present tense (the headline)
    "opened": "opens", "closed": "closes", "bought": "buys", "sold": "sells", "won": "wins", "lost": "loses",
    "built": "builds", "announced": "announces",
}
EVENT_OBJECTS = ("bridge", "park", "library", "prize", "panda", "road", "contract", "station")
OBJECT_ADJECTIVES = ("new", "second", "large", "rare", "famous")
OPENING_PHRASES = ("yesterday ,", "on monday ,", "last week ,", "this morning ,")
CLOSING_PHRASES = ("near the river", "in the north", "after a long debate", "for ten million dollars",
                   "despite the rain")
FILLER_SENTENCES = (
    "it was a sunny day .",
    "many people came to watch .",
    "the crowd cheered .",
    "reporters in {place} were surprised .",
    "critics were not impressed .",
    "more news will follow .",
    "the {actor} of {place} declined to comment .",
)
"""Sentences around the event. They name no event verb, but some name a place, or an actor and a
place, so a summarizer cannot take the first place or actor it reads."""


def summary_vocabulary() -> list[str]:
    """Every word of a report or a headline of ``summary_pairs``, sorted."""
    words = {"the", "of", "a", "."} | set(SUMMARY_ACTORS) | set(SUMMARY_PLACES) | set(EVENT_OBJECTS)
    words |= set(OBJECT_ADJECTIVES) | set(EVENT_VERBS) | set(EVENT_VERBS.values())
    for phrase in OPENING_PHRASES + CLOSING_PHRASES + FILLER_SENTENCES:
        words.update(w for w in phrase.split() if not w.startswith("{"))
    return sorted(words)


def summary_pairs(n: int, seed: int, max_fillers: int = 2) -> list[tuple[str, str]]:
    """``n`` pairs (a news report, its headline).

    A report is one event sentence, ``[opening ,] the <actor> of <place> <past verb> a [adjective]
    <object> [closing phrase] .``, among 0 to ``max_fillers`` filler sentences (uniformly many, the
    event at a uniformly drawn position). ``headline`` states the rule and recomputes every
    headline from its report.
    """
    _check_count("summary_pairs", n)
    if isinstance(max_fillers, bool) or not isinstance(max_fillers, (int, np.integer)) or max_fillers < 0:
        raise ValueError(f"summary_pairs: max_fillers must be a non-negative integer, got {max_fillers!r}")
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        actor, place = _pick(rng, SUMMARY_ACTORS), _pick(rng, SUMMARY_PLACES)
        verb, obj = _pick(rng, sorted(EVENT_VERBS)), _pick(rng, EVENT_OBJECTS)
        event = ["the", actor, "of", place, verb, "a", obj]
        if rng.random() < 0.5:
            event = _pick(rng, OPENING_PHRASES).split() + event
        if rng.random() < 0.5:
            event.insert(-1, _pick(rng, OBJECT_ADJECTIVES))
        if rng.random() < 0.5:
            event += _pick(rng, CLOSING_PHRASES).split()
        fillers = [_pick(rng, FILLER_SENTENCES).format(actor=_pick(rng, SUMMARY_ACTORS),
                                                       place=_pick(rng, SUMMARY_PLACES))
                   for _ in range(rng.integers(max_fillers + 1))]
        fillers.insert(rng.integers(len(fillers) + 1), " ".join(event + ["."]))
        pairs.append((" ".join(fillers), f"{place} {actor} {EVENT_VERBS[verb]} {obj}"))
    return pairs


def headline(report: str) -> str:
    """The headline of a report of ``summary_pairs``, by rule: ``<place> <actor> <verb> <object>``.

    The event sentence is the one sentence (sentences end with ``.``) holding a verb of
    ``EVENT_VERBS``. Who: the actor and place of ``the <actor> of <place>`` just before that verb,
    written place first. Did: the verb, in the present tense. What: the first object after it.
    Adjectives, articles, times, places of the event and every other sentence are left out.

    >>> headline("the crowd cheered . yesterday , the mayor of lima opened a new bridge near the river .")
    'lima mayor opens bridge'
    """
    words = report.split()
    sentences, start = [], 0
    for i, word in enumerate(words):
        if word == ".":
            sentences.append(words[start:i])
            start = i + 1
    if start != len(words) or not sentences:
        raise ValueError(f"headline: cannot read {report!r}: a report is sentences that each end with '.'")
    events = [s for s in sentences if any(w in EVENT_VERBS for w in s)]
    if len(events) != 1:
        raise ValueError(f"headline: cannot read {report!r}: expected exactly one sentence with an event verb "
                         f"({', '.join(sorted(EVENT_VERBS))}), found {len(events)}")
    event = events[0]
    v = next(i for i, w in enumerate(event) if w in EVENT_VERBS)
    who = event[max(v - 4, 0):v]
    objects = [w for w in event[v + 1:] if w in EVENT_OBJECTS]
    if len(who) != 4 or who[0] != "the" or who[1] not in SUMMARY_ACTORS or who[2] != "of" \
            or who[3] not in SUMMARY_PLACES or not objects:
        raise ValueError(f"headline: cannot read the event {' '.join(event)!r}: expected 'the <actor> of <place> "
                         f"<verb> ... <object>'")
    return f"{who[3]} {who[1]} {EVENT_VERBS[event[v]]} {objects[0]}"


# ====================================================================== dialogue
DIALOGUE_CITIES = ("paris", "london", "tokyo", "berlin", "cairo", "lima", "oslo", "rome")
DIALOGUE_DAYS = ("today", "tomorrow", "on monday", "on tuesday", "on wednesday", "on thursday", "on friday",
                 "on saturday", "on sunday")
PARTY_SIZES = ("two", "three", "four", "five", "six")
BOOKING_TIMES = ("6 pm", "7 pm", "8 pm", "9 pm")
_SLOT_VALUES = {"city": DIALOGUE_CITIES, "day": DIALOGUE_DAYS, "people": PARTY_SIZES, "time": BOOKING_TIMES}
REQUEST_TEMPLATES = {  # intent -> templates; a template is its fixed words and its slot phrases, in order
    "weather": (("what is the weather", "in {city}", "{day}", "?"),
                ("will it rain", "in {city}", "{day}", "?"),
                ("how cold is it", "in {city}", "{day}", "?")),
    "table": (("book a table", "for {people} people", "at {time}", "please"),
              ("i need a table", "for {people}", "at {time}"),
              ("can you reserve a table", "for {people} people", "at {time}", "?")),
    "train": (("i want a train", "to {city}", "{day}"),
              ("book me a train", "to {city}", "{day}", "please"),
              ("is there a train", "to {city}", "{day}", "?")),
}
REQUEST_SLOTS = {"weather": ("city", "day"), "table": ("people", "time"), "train": ("city", "day")}
REQUEST_KEYWORDS = {"weather": ("weather", "rain", "cold"), "table": ("table",), "train": ("train",)}
CHAT_TURNS = {  # intent -> what the user says (the whole turn)
    "greet": ("hello", "hi there", "good morning"),
    "thanks": ("thank you", "thanks a lot", "thank you very much"),
    "bye": ("goodbye", "bye for now", "see you later"),
}
GREETING_PREFIXES = ("hello ,", "hi ,")
REPLIES = {
    "weather": "here is the weather in {city} {day} .",
    "table": "a table for {people} at {time} . is that right ?",
    "train": "a train to {city} {day} . shall i book it ?",
    "greet": "hello ! how can i help you ?",
    "thanks": "you are welcome !",
    "bye": "goodbye , have a nice day !",
}
QUESTIONS = {  # (intent, missing slot) -> the question the assistant asks instead
    ("weather", "city"): "for which city ?",
    ("table", "people"): "for how many people ?",
    ("table", "time"): "at what time ?",
    ("train", "city"): "where do you want to go ?",
    ("train", "day"): "which day do you want to travel ?",
}
DEFAULT_SLOTS = {("weather", "day"): "today"}
"""A weather question without a day is about today; every other missing slot is asked for."""


def dialogue_vocabulary() -> list[str]:
    """Every word of a user turn or a reply of ``dialogue_pairs``, sorted."""
    words = set()
    texts = [*REPLIES.values(), *QUESTIONS.values(), *GREETING_PREFIXES]
    texts += [segment for templates in REQUEST_TEMPLATES.values() for t in templates for segment in t]
    texts += [turn for turns in CHAT_TURNS.values() for turn in turns]
    texts += [value for values in _SLOT_VALUES.values() for value in values]
    for text in texts:
        words.update(w for w in text.split() if not w.startswith("{"))
    return sorted(words)


def _reply(intent: str, slots: dict) -> str:
    """The assistant's reply to ``intent`` with the ``slots`` the user gave (see ``assistant_reply``)."""
    if intent not in REQUEST_SLOTS:
        return REPLIES[intent]
    slots = dict(slots)
    for slot in REQUEST_SLOTS[intent]:
        if slot not in slots:
            if (intent, slot) not in DEFAULT_SLOTS:
                return QUESTIONS[intent, slot]
            slots[slot] = DEFAULT_SLOTS[intent, slot]
    return REPLIES[intent].format(**slots)


def dialogue_pairs(n: int, seed: int, missing_rate: float = 0.2, greeting_rate: float = 0.2,
                   chat_rate: float = 0.2) -> list[tuple[str, str]]:
    """``n`` pairs (what the user says, what the assistant replies).

    With probability ``chat_rate`` the turn is small talk (a greeting, thanks or goodbye);
    otherwise it is a request (weather, a restaurant table or a train, equally likely) written
    with one of ``REQUEST_TEMPLATES``, each slot phrase left out with probability ``missing_rate``
    and the whole turn opened by a greeting with probability ``greeting_rate``.
    ``assistant_reply`` states the rule and recomputes every reply from the user's words.
    """
    name = "dialogue_pairs"
    _check_count(name, n)
    for rate_name, rate in (("missing_rate", missing_rate), ("greeting_rate", greeting_rate),
                            ("chat_rate", chat_rate)):
        _check_rate(name, rate_name, rate)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        if rng.random() < chat_rate:
            intent = _pick(rng, sorted(CHAT_TURNS))
            pairs.append((_pick(rng, CHAT_TURNS[intent]), REPLIES[intent]))
            continue
        intent = _pick(rng, sorted(REQUEST_TEMPLATES))
        template = _pick(rng, REQUEST_TEMPLATES[intent])
        values = {slot: _pick(rng, _SLOT_VALUES[slot]) for slot in REQUEST_SLOTS[intent]}
        words, given = [], {}
        if rng.random() < greeting_rate:
            words.append(_pick(rng, GREETING_PREFIXES))
        for segment in template:
            slot = next((s for s in values if "{" + s + "}" in segment), None)
            if slot is not None:
                if rng.random() < missing_rate:
                    continue
                given[slot] = values[slot]
            words.append(segment.format(**values))
        pairs.append((" ".join(words), _reply(intent, given)))
    return pairs


def parse_request(turn: str) -> tuple[str, dict]:
    """(intent, slots) of a user turn of ``dialogue_pairs``, by rule.

    The intent: ``table`` if the turn says "table", ``train`` if it says "train", ``weather`` if
    it says "weather", "rain" or "cold"; otherwise the small-talk turn it is (``greet``,
    ``thanks``, ``bye``). A request may open with a greeting, which does not change its intent.
    The slots: ``city`` a city's name, ``day`` "today", "tomorrow" or "on <weekday>", ``people``
    a number word, ``time`` "<digit> pm"; only those the intent uses are read.

    >>> parse_request("hello , book a table for four people please")
    ('table', {'people': 'four'})
    """
    words = turn.split()
    intents = [intent for intent, keys in REQUEST_KEYWORDS.items() if any(k in words for k in keys)]
    if len(intents) > 1:
        raise ValueError(f"parse_request: {turn!r} asks for several things ({', '.join(intents)}); expected one")
    if not intents:
        chat = [intent for intent, turns in CHAT_TURNS.items() if turn in turns]
        if not chat:
            raise ValueError(f"parse_request: {turn!r} is neither a request ({', '.join(REQUEST_KEYWORDS)}) nor "
                             f"a small-talk turn of CHAT_TURNS")
        return chat[0], {}
    intent = intents[0]
    found = {"city": [w for w in words if w in DIALOGUE_CITIES],
             "day": [w for w in words if w in ("today", "tomorrow")]
                    + [f"on {b}" for a, b in zip(words, words[1:]) if f"{a} {b}" in DIALOGUE_DAYS],
             "people": [w for w in words if w in PARTY_SIZES],
             "time": [f"{a} {b}" for a, b in zip(words, words[1:]) if f"{a} {b}" in BOOKING_TIMES]}
    slots = {}
    for slot in REQUEST_SLOTS[intent]:
        if len(found[slot]) > 1:
            raise ValueError(f"parse_request: {turn!r} gives several values for {slot}: {found[slot]}")
        if found[slot]:
            slots[slot] = found[slot][0]
    return intent, slots


def assistant_reply(turn: str) -> str:
    """The assistant's reply to a user turn of ``dialogue_pairs``, by rule.

    ``parse_request`` finds the intent and slots. Small talk gets its fixed reply (``REPLIES``).
    A request with every slot gets its reply with the slots filled in; a weather question with no
    day is about today (``DEFAULT_SLOTS``); otherwise the reply is the question for the first
    missing slot, in the order of ``REQUEST_SLOTS`` (``QUESTIONS``).

    >>> assistant_reply("is there a train to rome ?")
    'which day do you want to travel ?'
    """
    return _reply(*parse_request(turn))
