"""Statistical language models beside the neural ones: counts, smoothing, perplexity."""
from .ngram import NGramLM

__all__ = ["NGramLM"]
from .neural import CausalSentenceLM, NeuralNGramLM, WordVocabulary

__all__ += ["CausalSentenceLM", "NeuralNGramLM", "WordVocabulary"]
