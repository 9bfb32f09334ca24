"""nptransformer.functional (imported as ``F``): every op, primitive and fused.

The primitives (``primitives.py``) compose into anything; the fused ops in the other modules
have backward passes derived by hand, each linked to its derivation in ``docs/derivations/``.
"""
from .primitives import (
    abs,
    add,
    astype,
    broadcast_to,
    concatenate,
    div,
    exp,
    log,
    masked_fill,
    matmul,
    maximum,
    minimum,
    mul,
    pow,
    relu,
    reshape,
    sigmoid,
    split,
    sqrt,
    squeeze,
    stack,
    sub,
    swapaxes,
    tanh,
    transpose,
    unsqueeze,
    where,
)
from .softmax import cross_entropy, log_softmax, softmax
from .attention import scaled_dot_product_attention
from .layer_norm import layer_norm
from .activations import gelu
from .linear import linear
from .embedding import embedding
from .dropout import dropout
