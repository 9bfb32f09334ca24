"""Statistical language models beside the neural ones: counts, smoothing, perplexity."""
from .ngram import NGramLM

__all__ = ["NGramLM"]
