"""Basic layers: Linear, Embedding, LayerNorm, Dropout, FeedForward and positional encodings."""
from __future__ import annotations

import math

import numpy

from .. import functional as F
from ..autograd import DEFAULT_DTYPE, Tensor
from ..backend import get_array_module
from .module import Module, ModuleError, Parameter, child_rng, default_rng, init_uniform


def check_last_axis(module, x, size, what="input"):
    """A ShapeError naming the module unless ``x`` is (..., size) with at least 2 axes."""
    if x.ndim < 2 or x.shape[-1] != size:
        raise ModuleError(
            f"{type(module).__name__}: expected {what} of shape (..., {size}), got shape {tuple(x.shape)}"
        )


class Linear(Module):
    """y = x Wᵀ + b, with W of shape (out_features, in_features) as in PyTorch.

    Initialized as PyTorch does: W and b from U(-1/√in, 1/√in).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(numpy.empty((out_features, in_features), dtype=dtype))
        self.bias = Parameter(numpy.empty((out_features,), dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Draw fresh weights: W and b from U(-1/√in, 1/√in)."""
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight.data = init_uniform(self.weight.shape, bound, rng, self.weight.dtype)
        if self.bias is not None:
            self.bias.data = init_uniform(self.bias.shape, bound, rng, self.bias.dtype)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)  # F.linear checks the shapes and names them

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row ``i`` of ``weight`` (num_embeddings, embedding_dim) is token i's vector.

    Initialized from N(0, 1) as in PyTorch; the ``padding_idx`` row starts at zero and never
    receives a gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, rng=None, dtype=DEFAULT_DTYPE, std=1.0):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        weight = (rng or default_rng()).standard_normal((num_embeddings, embedding_dim)) * std
        if padding_idx is not None:
            weight[padding_idx] = 0.0
        self.weight = Parameter(weight.astype(dtype))

    def forward(self, ids):
        return F.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class LayerNorm(Module):
    """Normalize the last axis to zero mean and unit variance, then scale by γ and shift by β."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(numpy.ones(normalized_shape, dtype=dtype)) if elementwise_affine else None
        self.bias = Parameter(numpy.zeros(normalized_shape, dtype=dtype)) if elementwise_affine else None

    def forward(self, x):
        if x.shape[-1:] != (self.normalized_shape,):
            raise ModuleError(
                f"LayerNorm: expected input of shape (..., {self.normalized_shape}), got shape {tuple(x.shape)}"
            )
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"({self.normalized_shape},), eps={self.eps}"


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode.

    Each Dropout owns a generator seeded from ``rng`` (or the default one) when the model is
    built, so a seeded model drops the same units run after run; its state goes into checkpoints.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ModuleError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = child_rng(rng)

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training, rng=self.rng)

    def extra_repr(self):
        return f"p={self.p}"


def activation_fn(name):
    """The activation called ``name``: relu, gelu (erf form) or gelu_tanh."""
    table = {
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    }
    if name not in table:
        raise ModuleError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]


class FeedForward(Module):
    """The position-wise feed-forward network: linear2(dropout(act(linear1(x))))."""

    def __init__(self, d_model, dim_feedforward, dropout=0.0, activation="relu", rng=None):
        super().__init__()
        self.linear1 = Linear(d_model, dim_feedforward, rng=rng)
        self.activation_name = activation
        self.activation = activation_fn(activation)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, rng=rng)

    def forward(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def extra_repr(self):
        return f"activation={self.activation_name!r}"


def sinusoidal_table(max_len, d_model, dtype=DEFAULT_DTYPE):
    """The source's positional encoding, element for element:

        PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
        PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))

    Returns an array (max_len, d_model). An odd d_model keeps the last sine column.
    """
    pos = numpy.arange(max_len, dtype=numpy.float64)[:, None]  # (max_len, 1)
    two_i = numpy.arange(0, d_model, 2, dtype=numpy.float64)  # 2i = 0, 2, 4, ...
    angle = pos / 10000.0 ** (two_i / d_model)  # (max_len, ceil(d_model / 2))
    table = numpy.zeros((max_len, d_model))
    table[:, 0::2] = numpy.sin(angle)
    table[:, 1::2] = numpy.cos(angle[:, : d_model // 2])
    return table.astype(dtype)


class PositionalEncoding(Module):
    """Adds the fixed sinusoidal table to (B, T, C) inputs (then dropout, if any).

    The table is a non-persistent buffer: it is recomputed, not saved in checkpoints.
    """

    def __init__(self, d_model, max_len=5000, dropout=0.0, rng=None):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)
        self.dropout = Dropout(dropout, rng=rng)

    def forward(self, x, offset=0):
        """x (B, T, C) at positions offset .. offset + T - 1 (offset > 0 when decoding with a cache)."""
        check_last_axis(self, x, self.d_model)
        T = x.shape[-2]
        if offset + T > self.max_len:
            where = f"sequence length {T} exceeds" if offset == 0 else f"positions up to {offset + T} exceed"
            raise ModuleError(f"PositionalEncoding: {where} max_len {self.max_len}")
        return self.dropout(x + self.pe[offset:offset + T])

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """A trained vector per position (as in GPT and BERT), added to (B, T, C) inputs."""

    def __init__(self, max_len, d_model, rng=None, std=0.02):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.embedding = Embedding(max_len, d_model, rng=rng, std=std)

    def positions(self, T, offset, like):
        if offset + T > self.max_len:
            raise ModuleError(
                f"LearnedPositionalEmbedding: positions up to {offset + T} exceed max_len {self.max_len}"
            )
        xp = get_array_module(like.data if isinstance(like, Tensor) else like)
        return self.embedding(xp.arange(offset, offset + T))

    def forward(self, x, offset=0):
        check_last_axis(self, x, self.d_model)
        return x + self.positions(x.shape[-2], offset, x)

    def extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}"
