"""nptransformer.nn: modules, layers, attention, the Transformer and the model families."""
from .attention import MultiheadAttention
from .layers import (
    Dropout,
    Embedding,
    FeedForward,
    LayerNorm,
    LearnedPositionalEmbedding,
    Linear,
    PositionalEncoding,
    sinusoidal_table,
)
from .models import (
    BERT,
    GPT,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPTBlock,
    Seq2SeqTransformer,
)
from .module import Module, ModuleError, ModuleList, Parameter, Sequential, eval_mode, manual_seed
from .transformer import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
