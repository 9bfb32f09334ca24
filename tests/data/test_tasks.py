"""Generated tasks: right answers, determinism, date formats parsed back independently, no overlap
between the training and held-out dates."""
from __future__ import annotations

import datetime
import re

import pytest

from nptransformer.data import (
    DATE_FORMATS,
    CharTokenizer,
    addition_pairs,
    copy_pairs,
    date_characters,
    date_pairs,
    date_split,
    format_date,
    reverse_pairs,
    sort_pairs,
)
from nptransformer.data.tasks import ordinal

# ---------------------------------------------------------------------- an independent date parser
# Built on datetime.strptime (which matches month and weekday names ignoring case), not on the code
# under test. Each entry: (strptime format, whether the day carries an ordinal suffix).
STRPTIME = {
    "month_day_year": "%B %d, %Y",
    "month_ordinal_year": "%B %d, %Y",
    "day_month_year": "%d %B %Y",
    "ordinal_of_month": "the %d of %B, %Y",
    "short_month_day_year": "%b %d, %Y",
    "short_weekday": "%a, %b %d %Y",
    "long_weekday": "%A, %B %d, %Y",
    "day_mon_year": "%d-%b-%Y",
    "european_dots": "%d.%m.%Y",
    "us_slashes": "%m/%d/%y",
    "year_slashes": "%Y/%m/%d",
    "compact": "%Y%m%d",
    "chinese": "%Y年%m月%d日",
}
SUFFIX = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}
ORDINAL_FORMATS = {"month_ordinal_year", "ordinal_of_month"}
WEEKDAY_FORMATS = {"short_weekday": "%a", "long_weekday": "%A"}


def parse(text: str, fmt: str):
    """The date ``text`` means if read in format ``fmt``, or None if it is not in that format."""
    if fmt in ORDINAL_FORMATS:
        found = re.search(r"(\d+)(st|nd|rd|th)\b", text, flags=re.IGNORECASE)
        if found is None or found.group(2).lower() != SUFFIX.get(int(found.group(1)), "th"):
            return None
        text = text[: found.end(1)] + text[found.end() :]
    elif re.search(r"\d(st|nd|rd|th)\b", text, flags=re.IGNORECASE):
        return None
    if fmt == "compact" and len(text) != 8:
        return None
    try:
        date = datetime.datetime.strptime(text.lower() if fmt.startswith("ordinal") else text, STRPTIME[fmt]).date()
    except ValueError:
        return None
    if fmt == "us_slashes" and date.year > 2049:  # strptime's pivot is 69; the task's is 50
        date = date.replace(year=date.year - 100)
    if fmt in WEEKDAY_FORMATS and text.split(",")[0].lower() != date.strftime(WEEKDAY_FORMATS[fmt]).lower():
        return None
    return date


def readings(text: str) -> set:
    """Every date ``text`` can mean under every format: a single one if the formats are unambiguous."""
    return {d for fmt in STRPTIME if (d := parse(text, fmt)) is not None}


EDGE_DATES = [datetime.date(1950, 1, 1), datetime.date(1999, 12, 31), datetime.date(2000, 2, 29),
              datetime.date(2049, 12, 31), datetime.date(2021, 3, 5), datetime.date(2011, 11, 11),
              datetime.date(2012, 12, 12), datetime.date(2013, 1, 13), datetime.date(1962, 7, 22),
              datetime.date(1973, 8, 23), datetime.date(1984, 10, 2), datetime.date(2045, 5, 31)]


def test_the_test_parser_knows_every_format():
    assert set(STRPTIME) == set(DATE_FORMATS)


def test_the_examples_from_the_issue():
    d = datetime.date(2021, 3, 5)
    assert format_date(d, "month_day_year") == "March 5, 2021"
    assert format_date(d, "day_month_year") == "5 March 2021"
    assert format_date(d, "short_weekday") == "Fri, Mar 5 2021"
    assert format_date(d, "european_dots") == "05.03.2021"
    assert format_date(d, "us_slashes") == "3/5/21"
    assert format_date(d, "chinese") == "2021年3月5日"
    assert format_date(d, "ordinal_of_month", case="lower") == "the 5th of march, 2021"
    assert format_date(d, "long_weekday", case="upper") == "FRIDAY, MARCH 5, 2021"


@pytest.mark.parametrize("fmt", sorted(DATE_FORMATS))
def test_every_format_and_case_reads_back_as_exactly_its_date(fmt):
    train, heldout = date_split()
    dates = EDGE_DATES + train[::997] + heldout[::331]
    for date in dates:
        for case in ("as_written", "lower", "upper"):
            text = format_date(date, fmt, case)
            assert parse(text, fmt) == date, (fmt, case, text)
            assert readings(text) == {date}, (fmt, case, text)  # no other format reads it differently


def test_generated_pairs_are_correct_and_cover_every_format_and_case():
    pairs = date_pairs(3000, seed=0)
    formats_seen, cases_seen = set(), set()
    for text, iso in pairs:
        assert readings(text) == {datetime.date.fromisoformat(iso)}, text
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", iso)
        formats_seen.update(fmt for fmt in STRPTIME if parse(text, fmt) is not None)
        letters = re.sub(r"[^A-Za-z]", "", text)
        if letters:
            cases_seen.add("lower" if letters.islower() else "upper" if letters.isupper() else "as_written")
    assert formats_seen == set(DATE_FORMATS)
    assert cases_seen == {"as_written", "lower", "upper"}


def test_ordinals():
    assert [ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 24, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "24th", "31st"]


def test_training_and_heldout_dates_never_overlap():
    train, heldout = date_split()
    assert not set(train) & set(heldout)
    assert len(train) + len(heldout) == (datetime.date(2049, 12, 31) - datetime.date(1950, 1, 1)).days + 1
    assert len(heldout) == round(0.1 * (len(train) + len(heldout)))
    heldout_iso = {d.isoformat() for d in heldout}
    for seed in range(3):
        assert not {iso for _, iso in date_pairs(2000, seed, split="train")} & heldout_iso
        assert {iso for _, iso in date_pairs(500, seed, split="heldout")} <= heldout_iso


def test_date_pairs_are_deterministic_and_date_characters_cover_them():
    assert date_pairs(50, seed=7) == date_pairs(50, seed=7)
    assert date_pairs(50, seed=7) != date_pairs(50, seed=8)
    assert date_pairs(0, seed=0) == []
    tok = CharTokenizer(date_characters())
    for text, iso in date_pairs(2000, seed=1, split="heldout"):
        assert tok.unk_id not in tok.encode(text + iso)
    only = date_pairs(20, seed=0, formats=["chinese"])
    assert all(text.endswith("日") for text, _ in only)


def test_date_arguments_are_checked():
    with pytest.raises(ValueError, match="split must be"):
        date_pairs(3, 0, split="test")
    with pytest.raises(ValueError, match="unknown or no formats"):
        date_pairs(3, 0, formats=["roman"])
    with pytest.raises(ValueError, match="non-negative"):
        date_pairs(-1, 0)
    with pytest.raises(ValueError, match="unknown format"):
        format_date(datetime.date(2021, 1, 1), "roman")


# ---------------------------------------------------------------------- copy, reverse, sort, addition
@pytest.mark.parametrize("make, answer", [
    (copy_pairs, lambda s: s),
    (reverse_pairs, lambda s: s[::-1]),
    (sort_pairs, lambda s: "".join(sorted(s))),
])
def test_string_tasks_give_the_right_answer(make, answer):
    pairs = make(500, seed=3, alphabet="xyz", min_len=2, max_len=5)
    assert len(pairs) == 500 and pairs == make(500, seed=3, alphabet="xyz", min_len=2, max_len=5)
    assert {len(s) for s, _ in pairs} == {2, 3, 4, 5}
    assert set("".join(s for s, _ in pairs)) == set("xyz")
    assert all(t == answer(s) for s, t in pairs)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        make(3, 0, min_len=4, max_len=2)


def test_addition_pairs_are_right_and_use_every_operand_length():
    pairs = addition_pairs(2000, seed=0, max_digits=3)
    assert pairs == addition_pairs(2000, seed=0, max_digits=3)
    lengths = set()
    for question, answer in pairs:
        a, b = question.split("+")
        assert int(answer) == int(a) + int(b)
        assert a == str(int(a)) and b == str(int(b))  # no leading zeros
        lengths.update((len(a), len(b)))
    assert lengths == {1, 2, 3}
    assert "0+0" in {q for q, _ in addition_pairs(2000, seed=1, max_digits=1)}
