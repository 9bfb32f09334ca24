"""Tokenizers: round trips (hypothesis), special tokens, BPE training and encoding, save/load."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nptransformer.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    DataError,
    Tokenizer,
    WordTokenizer,
)
from nptransformer.data.tokenizers import FIRST_BYTE_ID, FIRST_MERGE_ID, PRETOKENIZE_PATTERN, bytes_to_unicode

MULTILINGUAL = (
    "The quick brown fox jumps over the lazy dog. It's 2021, and they've said: 'we'll see'.\n"
    "def __init__(self, x_1):\n    return x_1  # snake_case __dunder__\n"
    "Ünïcödé façade naïve café. Ελληνικά κείμενα. Русский текст.\n"
    "我爱自然语言处理。今天天气很好，我们去公园吧！中文中文中文\n"
    "Emoji: 🎉🎉🎉 👍🏽 👨‍👩‍👧 🇫🇷 ❤️❤️ 🙂🙂🙂\n"
) * 3

# Any Python str: every code point, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]))
cjk_and_emoji = st.text(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)  # CJK ideographs
    | st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)  # emoji
    | st.sampled_from(" \n,.!?。，abc123_'\u200d\ufe0f")
)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(MULTILINGUAL, vocab_size=FIRST_MERGE_ID + 200)


# ---------------------------------------------------------------------- shared interface
def test_special_tokens_have_the_same_fixed_ids_in_every_tokenizer(bpe):
    assert SPECIAL_TOKENS == ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>", "<cls>", "<sep>")
    for tok in (CharTokenizer.from_text("abc"), WordTokenizer.from_text("a b c"), bpe):
        assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id, tok.cls_id, tok.sep_id) == tuple(range(7))
        assert tok.id_to_token(0) == "<pad>"


def test_encode_adds_bos_and_eos_and_decode_skips_control_tokens():
    tok = CharTokenizer.from_text("abc")
    ids = tok.encode("cab", add_bos=True, add_eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and len(ids) == 5
    assert tok.decode(ids) == "cab"
    assert tok.decode(ids, skip_special=False) == "<bos>cab<eos>"
    assert tok.decode([PAD_ID, *ids, PAD_ID]) == "cab"
    assert tok.decode(np.array(ids)) == "cab"  # arrays of ids work as well as lists


def test_text_that_spells_a_special_token_is_encoded_as_plain_text():
    tok = CharTokenizer.from_text("<eos>")
    assert EOS_ID not in tok.encode("<eos>")
    assert tok.decode(tok.encode("<eos>")) == "<eos>"


def test_bad_ids_and_inputs_raise_readable_errors():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match=r"id 99 is outside the vocabulary \[0, 9\)"):
        tok.decode([99])
    with pytest.raises(ValueError, match="must be integers"):
        tok.decode([1.5])
    with pytest.raises(TypeError, match="takes a str"):
        tok.encode(["a"])
    with pytest.raises(KeyError, match="'z' is not in the vocabulary"):
        tok.token_to_id("z")


# ---------------------------------------------------------------------- characters
@given(st.text(min_size=1))
def test_char_tokenizer_round_trips_the_text_it_was_built_from(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(SPECIAL_TOKENS) + len(set(text))


def test_char_tokenizer_maps_unknown_characters_to_unk_and_shows_them():
    tok = CharTokenizer.from_text("abc")
    assert tok.encode("abz") == [tok.token_to_id("a"), tok.token_to_id("b"), UNK_ID]
    assert tok.decode(tok.encode("abz")) == "ab<unk>"


def test_char_tokenizer_rejects_bad_vocabularies():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="more than once"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["ab"])


# ---------------------------------------------------------------------- words
def test_word_split_separates_words_and_punctuation():
    assert WordTokenizer.split("Hello, world! it's  x_1\n2nd") == ["Hello", ",", "world", "!", "it", "'", "s", "x_1", "2nd"]


words = st.lists(st.text(st.characters(categories=["Ll", "Lu", "Lo", "Nd"]), min_size=1, max_size=6), min_size=1, max_size=12)


@given(words)
def test_word_tokenizer_round_trips_space_separated_words(ws):
    text = " ".join(ws)
    tok = WordTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


@given(st.text())
def test_word_tokenizer_decodes_to_the_normalized_text(text):
    tok = WordTokenizer.from_text(text + " x")
    assert tok.decode(tok.encode(text)) == " ".join(WordTokenizer.split(text))


def test_word_vocabulary_is_by_frequency_then_alphabetical_with_min_freq_and_max_size():
    text = "b a c a b a d"
    assert WordTokenizer.from_text(text).id_to_token(7) == "a"
    assert [WordTokenizer.from_text(text).id_to_token(i) for i in range(7, 11)] == ["a", "b", "c", "d"]
    tok = WordTokenizer.from_text(text, min_freq=2)
    assert tok.vocab_size == 9
    assert tok.encode("a c b") == [7, UNK_ID, 8]
    assert WordTokenizer.from_text(text, max_size=1).vocab_size == 8
    with pytest.raises(ValueError, match="no words"):
        WordTokenizer.from_text("   ")
    with pytest.raises(ValueError, match="single words or punctuation"):
        WordTokenizer(["two words"])


# ---------------------------------------------------------------------- byte-level BPE
@given(any_text)
def test_pretokenizer_pieces_cover_every_character(text):
    assert "".join(PRETOKENIZE_PATTERN.findall(text)) == text


def test_pretokenizer_follows_gpt2():
    assert PRETOKENIZE_PATTERN.findall("Hello world's  x 42!?") == ["Hello", " world", "'s", " ", " x", " 42", "!?"]


@given(any_text)
def test_bpe_round_trips_any_unicode(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert all(FIRST_BYTE_ID <= i < bpe.vocab_size for i in ids)
    assert b"".join(bpe.token_bytes(i) for i in ids) == text.encode("utf-8", "surrogatepass")


@given(cjk_and_emoji)
def test_bpe_round_trips_cjk_and_emoji(bpe, text):
    assert bpe.decode(bpe.encode(text, add_bos=True, add_eos=True)) == text


@given(cjk_and_emoji)
def test_bpe_trained_on_any_text_round_trips_it(text):
    tok = BPETokenizer.train(text, vocab_size=FIRST_MERGE_ID + 50, min_frequency=1)
    assert tok.decode(tok.encode(text)) == text


def test_bpe_learns_the_textbook_merges():
    # The classic example "aaabdaaabac": aa (4 times) -> Z; then ab and Za tie at 2 and the smaller
    # pair of ids (a, b) wins -> Y; then ZY (2 times) -> X; then every pair occurs once, so it stops.
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=1000)
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.vocab_size == FIRST_MERGE_ID + 3
    assert [tok.id_to_token(i) for i in tok.encode("aaabdaaabac")] == ["aaab", "d", "aaab", "a", "c"]


def test_bpe_greedy_encoding_equals_applying_merges_in_rank_order(bpe):
    # An independent reference: apply every merge once, in rank order, over each piece's bytes.
    merges = [(bpe.token_to_id(a), bpe.token_to_id(b)) for a, b in bpe.merges]
    text = "Ünïcödé façade, the lazy dog. 我爱自然语言 🎉🎉 def __init__(self):"
    expected = []
    for piece in PRETOKENIZE_PATTERN.findall(text):
        symbols = [FIRST_BYTE_ID + b for b in piece.encode("utf-8")]
        for rank, pair in enumerate(merges):
            out, i = [], 0
            while i < len(symbols):
                if tuple(symbols[i : i + 2]) == pair:
                    out.append(FIRST_MERGE_ID + rank)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            symbols = out
        expected.extend(symbols)
    assert bpe.encode(text) == expected
    assert len(expected) < len(text.encode("utf-8")) / 2  # the merges compress the text they learned from


def test_bpe_names_bytes_like_gpt2(bpe):
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert bpe.id_to_token(FIRST_BYTE_ID + ord(" ")) == "Ġ"
    assert bpe.token_bytes(bpe.token_to_id("Ġthe")) == b" the"


def test_bpe_learns_merges_inside_multibyte_characters(bpe):
    learned = [bpe.token_bytes(i) for i in range(FIRST_MERGE_ID, bpe.vocab_size)]
    assert "中文".encode() in learned and "🎉".encode() in learned  # whole CJK characters and emoji


def test_bpe_decodes_invalid_utf8_with_replacement_characters(bpe):
    assert bpe.decode([FIRST_BYTE_ID + 0xFF, FIRST_BYTE_ID + ord("a")]) == "\ufffda"
    assert bpe.decode([FIRST_BYTE_ID + ord("a"), EOS_ID, FIRST_BYTE_ID + ord("b")], skip_special=False) == "a<eos>b"


def test_bpe_training_checks_its_arguments():
    with pytest.raises(ValueError, match="at least 263"):
        BPETokenizer.train("abc", vocab_size=100)
    with pytest.raises(ValueError, match="must be in"):
        BPETokenizer([(FIRST_MERGE_ID, FIRST_BYTE_ID)])  # refers to an id not made yet
    assert BPETokenizer.train("", vocab_size=300).vocab_size == FIRST_MERGE_ID


# ---------------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_and_load_round_trip(tmp_path, bpe, kind):
    tok = {"char": CharTokenizer.from_text(MULTILINGUAL), "word": WordTokenizer.from_text(MULTILINGUAL), "bpe": bpe}[kind]
    path = tmp_path / f"{kind}.json"
    tok.save(path)
    assert os.listdir(tmp_path) == [f"{kind}.json"]  # the temporary file was renamed, not left behind
    for loaded in (Tokenizer.load(path), type(tok).load(str(path))):
        assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
        assert loaded.encode(MULTILINGUAL) == tok.encode(MULTILINGUAL)
        assert [loaded.id_to_token(i) for i in range(tok.vocab_size)] == [tok.id_to_token(i) for i in range(tok.vocab_size)]


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "tok.json"
    CharTokenizer.from_text("ab").save(path)
    CharTokenizer.from_text("xyz").save(path)
    assert Tokenizer.load(path).vocab_size == 10


def test_load_errors_are_one_line_and_name_the_file(tmp_path):
    CharTokenizer.from_text("ab").save(tmp_path / "char.json")
    cases = {
        "missing.json": "does not exist",
        "bad.json": "is not valid JSON",
        "list.json": "expected an object",
        "other.json": "has type 'sentencepiece'",
        "broken.json": "is malformed",
    }
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other.json").write_text(json.dumps({"type": "sentencepiece"}))
    record = json.loads((tmp_path / "char.json").read_text())
    (tmp_path / "broken.json").write_text(json.dumps({**record, "tokens": ["a", "a"]}))
    for name, message in cases.items():
        with pytest.raises(DataError, match=message) as err:
            Tokenizer.load(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="holds a CharTokenizer, not a BPETokenizer"):
        BPETokenizer.load(tmp_path / "char.json")
    with pytest.raises(DataError, match="cannot write tokenizer file"):
        CharTokenizer.from_text("ab").save(tmp_path / "no_such_folder" / "tok.json")
