"""Real pretrained models: their tokenizers and weights (read with nptransformer.serialization)."""
from .bert import load_bert
from .sentence import SentenceEncoder, semantic_search
from .wordpiece import WordPieceTokenizer

__all__ = ["SentenceEncoder", "WordPieceTokenizer", "load_bert", "semantic_search"]
