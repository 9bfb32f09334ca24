"""Tokenizers: text to a list of integer ids and back.

Three ways to cut text into tokens, sharing one interface (``Tokenizer``):

- ``CharTokenizer``: one token per character seen in the training text. Tiny vocabulary, long
  sequences; what the generated tasks (copy, reverse, dates, ...) use.
- ``WordTokenizer``: one token per word or punctuation mark (``WORD_PATTERN``). Short sequences,
  a large vocabulary, and every word not seen in training becomes ``<unk>``.
- ``BPETokenizer``: byte-level byte-pair encoding, as GPT-2 does it. It starts from the 256 byte
  values, so every string has an encoding (no ``<unk>`` ever), and learns merges of frequent
  adjacent pairs until the vocabulary has the requested size.

Special tokens come first and have the same ids in every tokenizer::

    0 <pad>   1 <bos>   2 <eos>   3 <unk>   4 <mask>   5 <cls>   6 <sep>

``encode`` never produces a special token from the text itself (the text ``"<eos>"`` is five
characters, not the end of sequence); special ids are added by ``add_bos``/``add_eos`` or placed by
the code that builds batches. ``decode(ids, skip_special=True)`` drops the control tokens (pad,
bos, eos, mask, cls, sep) and writes ``<unk>`` where it appears, because ``<unk>`` stands for a
piece of the text.

Tokenizers are saved as JSON (``save``/``load``); the write is atomic.
"""
from __future__ import annotations

import heapq
import json
import operator
import re
from collections import Counter, defaultdict

from .files import DataError, read_json, write_text_atomically

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>", "<cls>", "<sep>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID, CLS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
_FORMAT_VERSION = 1


class Tokenizer:
    """The shared part: special tokens, the id <-> token tables, ``encode``/``decode``, save/load.

    A subclass sets ``kind`` (the ``"type"`` written to JSON) and provides ``_encode_text``
    (text -> ids without special tokens), ``_detokenize`` (ids -> text; special ids may appear
    in it when ``skip_special=False``), ``_to_dict`` and ``_from_dict``.
    """

    kind = ""
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    mask_id, cls_id, sep_id = MASK_ID, CLS_ID, SEP_ID
    special_tokens = SPECIAL_TOKENS

    def __init__(self, tokens):
        self._id_to_token = list(SPECIAL_TOKENS) + list(tokens)
        self._token_to_id = {}
        for i, token in enumerate(self._id_to_token):
            self._token_to_id.setdefault(token, i)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included: ids run from 0 to ``vocab_size - 1``."""
        return len(self._id_to_token)

    def token_to_id(self, token: str) -> int:
        """The id of ``token`` (a special token's name works too); KeyError if it is not in the vocabulary."""
        try:
            return self._token_to_id[token]
        except KeyError:
            raise KeyError(f"{type(self).__name__}: token {token!r} is not in the vocabulary") from None

    def id_to_token(self, i: int) -> str:
        """The token with id ``i``, as a string (BPE tokens use GPT-2's printable byte alphabet)."""
        return self._id_to_token[self._check_id(i)]

    def _check_id(self, i) -> int:
        try:
            i = operator.index(i)
        except TypeError:
            raise ValueError(f"{type(self).__name__}: token ids must be integers, got {i!r}") from None
        if not 0 <= i < len(self._id_to_token):
            raise ValueError(f"{type(self).__name__}: id {i} is outside the vocabulary [0, {len(self._id_to_token)})")
        return i

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """The ids of ``text``, optionally with ``<bos>`` in front and ``<eos>`` at the end."""
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}.encode takes a str, got {type(text).__name__}")
        ids = self._encode_text(text)
        if add_bos:
            ids.insert(0, BOS_ID)
        if add_eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids, skip_special: bool = True) -> str:
        """The text of ``ids`` (a list or a 1-D array of ints).

        ``skip_special=True`` drops pad, bos, eos, mask, cls and sep; ``<unk>`` is always written.
        With ``skip_special=False`` every special token is written as its name, e.g. ``<eos>``.
        """
        kept = [i for i in map(self._check_id, ids) if not (skip_special and i < len(SPECIAL_TOKENS) and i != UNK_ID)]
        return self._detokenize(kept)

    def _encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def _detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ save / load
    def save(self, path) -> None:
        """Write the tokenizer to ``path`` as JSON (atomically: a crash never leaves half a file)."""
        record = {"type": self.kind, "format_version": _FORMAT_VERSION, "special_tokens": list(SPECIAL_TOKENS)}
        record.update(self._to_dict())
        write_text_atomically(path, json.dumps(record, indent=1) + "\n", what="tokenizer file")

    @classmethod
    def load(cls, path) -> Tokenizer:
        """Read a tokenizer written by ``save``. ``Tokenizer.load`` returns whichever kind the file
        holds; ``CharTokenizer.load`` (etc.) also checks that the file holds that kind."""
        record = read_json(path, what="tokenizer file")
        kinds = {k.kind: k for k in (CharTokenizer, WordTokenizer, BPETokenizer)}
        kind = record.get("type")
        if kind not in kinds:
            raise DataError(f"tokenizer file {str(path)!r} has type {kind!r}, expected one of {sorted(kinds)}")
        if cls is not Tokenizer and kinds[kind] is not cls:
            raise DataError(f"tokenizer file {str(path)!r} holds a {kinds[kind].__name__}, not a {cls.__name__}")
        if record.get("format_version") != _FORMAT_VERSION or record.get("special_tokens") != list(SPECIAL_TOKENS):
            raise DataError(
                f"tokenizer file {str(path)!r} has format_version {record.get('format_version')!r} and special "
                f"tokens {record.get('special_tokens')!r}; this version reads {_FORMAT_VERSION} and {list(SPECIAL_TOKENS)}"
            )
        try:
            return kinds[kind]._from_dict(record)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"tokenizer file {str(path)!r} is malformed: {err}") from None

    def _to_dict(self) -> dict:
        return {"tokens": self._id_to_token[len(SPECIAL_TOKENS) :]}

    @classmethod
    def _from_dict(cls, record: dict) -> Tokenizer:
        return cls(record["tokens"])

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _check_vocabulary(name: str, tokens: list[str]) -> None:
    """Tokens must be non-empty strings, distinct, and not the name of a special token."""
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"{name}: tokens must be non-empty strings, got {token!r}")
        if token in SPECIAL_TOKENS:
            raise ValueError(f"{name}: {token!r} is a special token and cannot be a regular token")
    duplicates = sorted(t for t, n in Counter(tokens).items() if n > 1)
    if duplicates:
        raise ValueError(f"{name}: tokens appear more than once: {duplicates[:5]}")


# ====================================================================== characters
class CharTokenizer(Tokenizer):
    """One token per character. Characters not in the vocabulary encode to ``<unk>``.

    ``decode(encode(text)) == text`` for every text made of vocabulary characters.
    """

    kind = "char"

    def __init__(self, chars):
        chars = list(chars)
        _check_vocabulary("CharTokenizer", chars)
        long = [c for c in chars if len(c) != 1]
        if long:
            raise ValueError(f"CharTokenizer: every token must be one character, got {long[:5]}")
        super().__init__(chars)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A tokenizer for the characters of ``text``, in code point order."""
        if not text:
            raise ValueError("CharTokenizer.from_text: the text is empty, so there are no characters to learn")
        return cls(sorted(set(text)))

    def _encode_text(self, text):
        lookup = self._token_to_id.get
        return [lookup(c, UNK_ID) for c in text]

    def _detokenize(self, ids):
        return "".join(self._id_to_token[i] for i in ids)


# ====================================================================== words
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
"""A word is a run of letters, digits and underscores; every other non-space character is its own token."""


class WordTokenizer(Tokenizer):
    """One token per word or punctuation mark; whitespace only separates them.

    ``decode`` joins tokens with single spaces, so ``decode(encode(text)) ==
    " ".join(WordTokenizer.split(text))`` when every word is in the vocabulary: exact for text
    written as words separated by single spaces, and a normalized form otherwise
    (``"Hi, you"`` comes back as ``"Hi , you"``).
    """

    kind = "word"

    def __init__(self, words):
        words = list(words)
        _check_vocabulary("WordTokenizer", words)
        bad = [w for w in words if WORD_PATTERN.fullmatch(w) is None]
        if bad:
            raise ValueError(f"WordTokenizer: tokens must be single words or punctuation marks (WORD_PATTERN), got {bad[:5]}")
        super().__init__(words)

    @staticmethod
    def split(text: str) -> list[str]:
        """The words and punctuation marks of ``text``, in order."""
        return WORD_PATTERN.findall(text)

    @classmethod
    def from_text(cls, text: str, min_freq: int = 1, max_size: int | None = None) -> WordTokenizer:
        """A tokenizer for the words of ``text`` seen at least ``min_freq`` times.

        Ids go to the most frequent words first (ties in alphabetical order); ``max_size`` keeps
        only that many words. Everything else encodes to ``<unk>``.
        """
        if min_freq < 1:
            raise ValueError(f"WordTokenizer.from_text: min_freq must be >= 1, got {min_freq}")
        counts = Counter(cls.split(text))
        if not counts:
            raise ValueError("WordTokenizer.from_text: the text has no words")
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls(words[:max_size])

    def _encode_text(self, text):
        lookup = self._token_to_id.get
        return [lookup(w, UNK_ID) for w in self.split(text)]

    def _detokenize(self, ids):
        return " ".join(self._id_to_token[i] for i in ids)


# ====================================================================== byte-level BPE
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value to a printable character, used to *name* byte tokens.

    Bytes that are already visible Latin-1 characters name themselves; the other 68 (control
    characters, space, ...) are moved to code points 256 and up, in order. So the space byte is
    ``"Ġ"`` (chr(256 + 32)) and the BPE token for ``" the"`` reads ``"Ġthe"``.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in visible}
    moved = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + moved)
            moved += 1
    return table


BYTE_NAMES = bytes_to_unicode()
FIRST_BYTE_ID = len(SPECIAL_TOKENS)  # byte b has id FIRST_BYTE_ID + b
FIRST_MERGE_ID = FIRST_BYTE_ID + 256  # the merge of rank r has id FIRST_MERGE_ID + r

PRETOKENIZE_PATTERN = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
"""GPT-2's pre-tokenizer written for Python's ``re`` (which lacks ``\\p{L}``): English
contractions; an optional space and a run of letters (``[^\\W\\d_]``: word characters that are
not digits or underscores); an optional space and a run of digits; an optional space and a run of
other symbols (underscore included); whitespace. Every character of every string falls in one of
these, so the pieces concatenate back to the text. BPE merges never cross a piece boundary."""


def _merge_pair(symbols: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``symbols`` with every occurrence of ``pair``, scanning left to right, replaced by ``new_id``."""
    first, second = pair
    out = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class BPETokenizer(Tokenizer):
    """Byte-level byte-pair encoding (GPT-2's scheme).

    Ids: 0-6 special tokens, 7-262 the 256 byte values, then one id per learned merge, in the
    order the merges were learned (their *rank*). Text is encoded as UTF-8 (lone surrogates
    included, through ``surrogatepass``), so ``decode(encode(s)) == s`` for every Python str.

    Encoding one pre-tokenized piece: start from its bytes; repeatedly find the adjacent pair
    whose merge has the lowest rank and merge all its occurrences; stop when no adjacent pair has
    a merge. A sequence of ids that is not valid UTF-8 (a model can sample one) decodes with
    U+FFFD in place of the bad bytes.
    """

    kind = "bpe"

    def __init__(self, merges):
        self._bytes = [b""] * FIRST_BYTE_ID + [bytes([b]) for b in range(256)]
        self._merges = {}  # (left id, right id) -> merged id; a lower id means an earlier merge
        for rank, pair in enumerate(merges):
            left, right = (int(i) for i in pair)
            new_id = FIRST_MERGE_ID + rank
            if not (FIRST_BYTE_ID <= left < new_id and FIRST_BYTE_ID <= right < new_id):
                raise ValueError(
                    f"BPETokenizer: merge {rank} joins ids ({left}, {right}); both must be in [{FIRST_BYTE_ID}, {new_id})"
                )
            if (left, right) in self._merges:
                raise ValueError(f"BPETokenizer: merge {rank} repeats the pair ({left}, {right})")
            self._merges[(left, right)] = new_id
            self._bytes.append(self._bytes[left] + self._bytes[right])
        super().__init__("".join(BYTE_NAMES[b] for b in token) for token in self._bytes[FIRST_BYTE_ID:])
        self._cache: dict[str, list[int]] = {}

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The learned merges in rank order, as pairs of readable token names."""
        return [(self._id_to_token[a], self._id_to_token[b]) for a, b in self._merges]

    def token_bytes(self, i: int) -> bytes:
        """The bytes that id ``i`` stands for (empty for special tokens)."""
        return self._bytes[self._check_id(i)]

    @classmethod
    def train(cls, text: str, vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
        """Learn merges from ``text`` until the vocabulary (special tokens and 256 bytes included)
        has ``vocab_size`` ids, or no adjacent pair occurs ``min_frequency`` times.

        The text is cut with ``PRETOKENIZE_PATTERN`` and each distinct piece (a *word type*) is
        kept once with its count. Pair counts are kept up to date incrementally: a merge only
        touches the word types that contain the pair (``where``), subtracting their old pairs and
        adding their new ones, and a heap of (-count, pair) finds the next most frequent pair
        (entries whose count has since changed are skipped). Ties go to the smaller pair of ids.
        """
        if vocab_size < FIRST_MERGE_ID:
            raise ValueError(
                f"BPETokenizer.train: vocab_size must be at least {FIRST_MERGE_ID} "
                f"({FIRST_BYTE_ID} special tokens + 256 bytes), got {vocab_size}"
            )
        if min_frequency < 1:
            raise ValueError(f"BPETokenizer.train: min_frequency must be >= 1, got {min_frequency}")
        piece_counts = Counter(PRETOKENIZE_PATTERN.findall(text))
        words = [[FIRST_BYTE_ID + b for b in piece.encode("utf-8", "surrogatepass")] for piece in piece_counts]
        freqs = list(piece_counts.values())

        pair_counts: Counter = Counter()
        where = defaultdict(set)  # pair -> indices of the word types that contain (or contained) it
        for w, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += freq
                where[pair].add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges = []
        while heap and FIRST_MERGE_ID + len(merges) < vocab_size:
            negative_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair) != -negative_count:
                continue  # stale: this pair's count changed after the entry was pushed
            if -negative_count < min_frequency:
                break
            new_id = FIRST_MERGE_ID + len(merges)
            merges.append(pair)
            touched = set()
            for w in where.pop(pair):
                word, freq = words[w], freqs[w]
                merged = _merge_pair(word, pair, new_id)
                if len(merged) == len(word):
                    continue  # this word type lost the pair to an earlier merge
                for old in zip(word, word[1:]):
                    pair_counts[old] -= freq
                    touched.add(old)
                for new in zip(merged, merged[1:]):
                    pair_counts[new] += freq
                    where[new].add(w)
                    touched.add(new)
                words[w] = merged
            for p in touched:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
                else:
                    del pair_counts[p]
        return cls(merges)

    def _encode_piece(self, piece: str) -> list[int]:
        symbols = [FIRST_BYTE_ID + b for b in piece.encode("utf-8", "surrogatepass")]
        merges = self._merges
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda pair: merges.get(pair, float("inf")))
            if best not in merges:
                break
            symbols = _merge_pair(symbols, best, merges[best])
        return symbols

    def _encode_text(self, text):
        ids = []
        cache = self._cache
        for piece in PRETOKENIZE_PATTERN.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = cache[piece] = self._encode_piece(piece)
            ids.extend(piece_ids)
        return ids

    def _detokenize(self, ids):
        parts, run = [], []
        for i in ids:
            if i < FIRST_BYTE_ID:
                parts.append(self._decode_bytes(b"".join(run)))
                parts.append(SPECIAL_TOKENS[i])
                run = []
            else:
                run.append(self._bytes[i])
        parts.append(self._decode_bytes(b"".join(run)))
        return "".join(parts)

    @staticmethod
    def _decode_bytes(data: bytes) -> str:
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return data.decode("utf-8", "replace")

    def _to_dict(self):
        return {"merges": [list(pair) for pair in self._merges]}

    @classmethod
    def _from_dict(cls, record):
        return cls(record["merges"])
