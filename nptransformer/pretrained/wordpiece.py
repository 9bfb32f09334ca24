"""BERT's WordPiece tokenizer, written out in plain Python so each step can be read and tested.

Text becomes ids in two passes, exactly as in the original BERT code (and Hugging Face's
``BertTokenizer``):

1. **Basic tokenization** splits text into words.
   * Clean: drop NUL, U+FFFD and control characters (Unicode category C*, except tab, newline and
     carriage return); turn every whitespace character (those three, space, category Zs) into a
     space.
   * CJK: put spaces around every CJK ideograph, so each one is a word of its own.
   * Split on whitespace. For an uncased model, lower-case each word and strip its accents:
     decompose it (NFD: "é" -> "e" + U+0301) and drop the combining marks (category Mn).
   * Split off punctuation: every punctuation character becomes a word. BERT's punctuation is
     all non-alphanumeric printable ASCII (codes 33-47, 58-64, 91-96, 123-126, so "$", "^", "`"
     count) plus every Unicode category P* character.
2. **WordPiece** splits each word into vocabulary pieces, greedily taking the longest prefix that
   is in the vocabulary, then the longest continuation (written with a "##" prefix), and so on:
   "unaffable" -> "un", "##aff", "##able". A word with a part that matches nothing, or longer than
   100 characters, becomes "[UNK]" as a whole.

``encode`` then maps pieces to ids and wraps them as ``[CLS] ... [SEP]``. Special tokens written
literally in the text (``"a [SEP] b"``) are kept whole, as Hugging Face does.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np


# --------------------------------------------------------------------------- characters
def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    # Tab, newline and carriage return are category Cc, but BERT treats them as whitespace.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    """CJK Unified Ideographs and their extensions and compatibility blocks (not kana, not
    Hangul: those languages put spaces between words)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _strip_accents(word: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")


def _split_on_punctuation(word: str) -> list[str]:
    """"don't!" -> ["don", "'", "t", "!"]: each punctuation character is a piece of its own."""
    pieces, current = [], []
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return pieces


def _read_vocab(path) -> list[str]:
    with open(path, encoding="utf-8") as f:     # one token a line; the line number is its id
        return [line.rstrip("\n") for line in f]


def _token_name(value):
    """A special token as tokenizer_config.json gives it: a string, or {"content": string}."""
    return value["content"] if isinstance(value, dict) else value


class WordPieceTokenizer:
    """BERT's tokenizer: basic tokenization, then greedy longest-match-first WordPiece.

    ``vocab`` is a list of tokens (the id of a token is its index) or the path of a
    ``vocab.txt`` with one token a line. With the defaults it equals the uncased BERT tokenizer
    (``bert-base-uncased``, MiniLM, ...): ``do_lower_case=True`` lower-cases and, unless
    ``strip_accents=False``, strips accents; a cased model wants ``do_lower_case=False``.
    """

    def __init__(self, vocab: Sequence[str] | str | os.PathLike, do_lower_case: bool = True,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
                 unk_token: str = "[UNK]", cls_token: str = "[CLS]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", mask_token: str = "[MASK]",
                 max_input_chars_per_word: int = 100):
        tokens = _read_vocab(vocab) if isinstance(vocab, (str, os.PathLike)) else list(vocab)
        self.vocab = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise ValueError(f"WordPieceTokenizer: vocabulary entry {i} is {token!r}, not a string")
            if token in self.vocab:
                raise ValueError(f"WordPieceTokenizer: the token {token!r} appears twice in the "
                                 f"vocabulary (ids {self.vocab[token]} and {i})")
            self.vocab[token] = i
        self.ids_to_tokens = tokens
        if unk_token not in self.vocab:
            raise ValueError(f"WordPieceTokenizer: the unknown token {unk_token!r} is not in the "
                             f"vocabulary ({len(tokens)} tokens)")
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.max_input_chars_per_word = max_input_chars_per_word
        self.special_tokens = [t for t in (unk_token, cls_token, sep_token, pad_token, mask_token)
                               if t in self.vocab]
        # Longest first, so that a special token that contains another is matched whole.
        self._special_pattern = re.compile(
            "(" + "|".join(map(re.escape, sorted(self.special_tokens, key=len, reverse=True))) + ")")
        # No piece is longer than this, so longer candidates need not be looked up.
        self._longest_piece = max((len(t) - 2 if t.startswith("##") else len(t)) for t in tokens)

    @classmethod
    def from_pretrained(cls, model_dir) -> WordPieceTokenizer:
        """Build the tokenizer of a Hugging Face model folder: ``vocab.txt``, with the options of
        ``tokenizer_config.json`` when that file is there (lower-casing, accents, special tokens)."""
        model_dir = os.fspath(model_dir)
        options = {}
        config_path = os.path.join(model_dir, "tokenizer_config.json")
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
            for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
                if key in config:
                    options[key] = config[key]
            for key in ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token"):
                if key in config:
                    options[key] = _token_name(config[key])
        return cls(os.path.join(model_dir, "vocab.txt"), **options)

    # ----------------------------------------------------------------------- sizes and ids
    @property
    def vocab_size(self) -> int:
        return len(self.ids_to_tokens)

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    def _special_id(self, token: str, role: str) -> int:
        if token not in self.vocab:
            raise ValueError(f"WordPieceTokenizer: the {role} token {token!r} is not in the vocabulary")
        return self.vocab[token]

    @property
    def unk_token_id(self) -> int:
        return self.vocab[self.unk_token]

    @property
    def cls_token_id(self) -> int:
        return self._special_id(self.cls_token, "classifier")

    @property
    def sep_token_id(self) -> int:
        return self._special_id(self.sep_token, "separator")

    @property
    def pad_token_id(self) -> int:
        return self._special_id(self.pad_token, "padding")

    @property
    def mask_token_id(self) -> int:
        return self._special_id(self.mask_token, "mask")

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        unk = self.unk_token_id
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.ids_to_tokens):
                raise ValueError(f"WordPieceTokenizer: id {i} is outside the vocabulary "
                                 f"(0..{len(self.ids_to_tokens) - 1})")
            out.append(self.ids_to_tokens[int(i)])
        return out

    # ----------------------------------------------------------------------- tokenization
    def basic_tokenize(self, text: str) -> list[str]:
        """Step 1: the words of ``text`` (cleaned, CJK split, lower-cased, accents stripped,
        punctuation split off). "Héllo,  世界!" -> ["hello", ",", "世", "界", "!"]."""
        chars = []
        for ch in text:
            if ch in "\x00\ufffd" or _is_control(ch):
                continue
            if _is_whitespace(ch):
                chars.append(" ")
            elif self.tokenize_chinese_chars and _is_cjk(ch):
                chars += [" ", ch, " "]
            else:
                chars.append(ch)
        # NFC first, as Hugging Face does: one character, one code point (matters when cased).
        # str.split() also splits at the few separators BERT keeps (U+2028, U+2029), as HF does.
        words = []
        for word in unicodedata.normalize("NFC", "".join(chars)).split():
            if self.do_lower_case:
                word = word.lower()
                if self.strip_accents is not False:
                    word = _strip_accents(word)
            elif self.strip_accents:
                word = _strip_accents(word)
            words += _split_on_punctuation(word)
        return " ".join(words).split()

    def wordpiece(self, word: str) -> list[str]:
        """Step 2: greedy longest-match-first pieces of one word; [UNK] if any part fails.

        "unaffable": the longest prefix in the vocabulary is "un"; from there the longest
        "##"-continuation is "##aff", then "##able" -> ["un", "##aff", "##able"].
        """
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            for end in range(min(len(word), start + self._longest_piece), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
            else:                                  # nothing matched from `start`
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text`` (no [CLS]/[SEP] added)."""
        tokens = []
        for i, chunk in enumerate(self._special_pattern.split(text)):
            if i % 2:                              # a special token written in the text
                tokens.append(chunk)
                continue
            for word in self.basic_tokenize(chunk):
                tokens += self.wordpiece(word)
        return tokens

    # ----------------------------------------------------------------------- ids
    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None,
               truncation: bool = True) -> list[int]:
        """The ids of ``[CLS] tokens [SEP]`` (or of the bare tokens).

        With ``max_length``, a longer result is cut to ``max_length`` ids, keeping [CLS] and the
        final [SEP] (``truncation=True``) or refused with a ValueError (``truncation=False``).
        """
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        n_special = 2 if add_special_tokens else 0
        if max_length is not None:
            if max_length < n_special:
                raise ValueError(f"WordPieceTokenizer.encode: max_length={max_length} leaves no "
                                 f"room for [CLS] and [SEP]")
            if len(ids) + n_special > max_length:
                if not truncation:
                    raise ValueError(f"WordPieceTokenizer.encode: the text is {len(ids) + n_special} "
                                     f"ids long, over max_length={max_length}, and truncation=False")
                ids = ids[:max_length - n_special]
        if add_special_tokens:
            ids = [self.cls_token_id] + ids + [self.sep_token_id]
        return ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True,
                     max_length: int | None = None, truncation: bool = True,
                     padding: str = "longest") -> tuple[np.ndarray, np.ndarray]:
        """Encode several texts and pad them with [PAD] to one length.

        Returns ``(input_ids, attention_mask)``, two int64 arrays of shape (B, T): the mask is
        1 on real tokens and 0 on padding (Hugging Face's convention). ``padding="longest"``
        pads to the longest text; ``padding="max_length"`` pads every row to ``max_length``.
        """
        if isinstance(texts, str):
            raise ValueError("WordPieceTokenizer.encode_batch: expected a list of texts, got one "
                             "string (use encode for a single text)")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"WordPieceTokenizer.encode_batch: padding must be 'longest' or "
                             f"'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("WordPieceTokenizer.encode_batch: padding='max_length' needs max_length")
        rows = [self.encode(t, add_special_tokens, max_length, truncation) for t in texts]
        width = max_length if padding == "max_length" else max((len(r) for r in rows), default=0)
        input_ids = np.full((len(rows), width), self.pad_token_id if rows else 0, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for b, row in enumerate(rows):
            input_ids[b, :len(row)] = row
            attention_mask[b, :len(row)] = 1
        return input_ids, attention_mask

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool = True) -> str:
        """Text from ids: pieces joined with spaces, "##" continuations glued to the piece
        before, and (by default) the spaces tokenization put before . , ! ? and in
        contractions removed, as Hugging Face's BertTokenizer does. Lower-casing and stripped
        accents cannot be undone."""
        tokens = self.convert_ids_to_tokens(ids)
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in self.special_tokens]
        text = " ".join(tokens).replace(" ##", "").strip()
        if clean_up_tokenization_spaces:
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                                  (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                                  (" 're", "'re")):
                text = text.replace(before, after)
        return text
