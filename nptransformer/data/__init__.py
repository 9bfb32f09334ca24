"""Data: tokenizers, generated tasks, a synthetic language with a known entropy, text corpora,
and batching with the padding masks the models need. Plain NumPy and Python; nothing here
fetches anything from the network."""
from .batching import Seq2SeqBatch, causal_mask, lm_batches, pad_batch, seq2seq_batch
from .corpus import TextFileDataset, stdlib_docstrings, stdlib_source_files
from .files import DataError
from .grammar import END, ProbabilisticGrammar, english_grammar
from .tasks import (
    DATE_FORMATS,
    addition_pairs,
    copy_pairs,
    date_characters,
    date_pairs,
    date_split,
    format_date,
    reverse_pairs,
    sort_pairs,
)
from .tokenizers import (
    BOS_ID,
    CLS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
)

__all__ = [
    "BOS_ID",
    "BPETokenizer",
    "CLS_ID",
    "CharTokenizer",
    "DATE_FORMATS",
    "DataError",
    "END",
    "EOS_ID",
    "MASK_ID",
    "PAD_ID",
    "ProbabilisticGrammar",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "Seq2SeqBatch",
    "TextFileDataset",
    "Tokenizer",
    "UNK_ID",
    "WordTokenizer",
    "addition_pairs",
    "causal_mask",
    "copy_pairs",
    "date_characters",
    "date_pairs",
    "date_split",
    "english_grammar",
    "format_date",
    "lm_batches",
    "pad_batch",
    "reverse_pairs",
    "seq2seq_batch",
    "sort_pairs",
    "stdlib_docstrings",
    "stdlib_source_files",
]
