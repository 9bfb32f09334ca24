"""Real pretrained models: their tokenizers and weights (read with nptransformer.serialization)."""
from .wordpiece import WordPieceTokenizer

__all__ = ["WordPieceTokenizer"]
