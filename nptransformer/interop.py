"""Weights in PyTorch's names, in and out, without importing torch.

Our layers use torch.nn's parameter names (``self_attn``, ``linear1``, ``norm1``, ...), with one
difference: ``nn.MultiheadAttention`` packs the query, key and value projections into one
``in_proj_weight`` (3E, E) and ``in_proj_bias`` (3E,), where ours keeps ``q_proj``, ``k_proj`` and
``v_proj`` apart. These two functions split and pack them.
"""
from __future__ import annotations

import numpy

from .backend import to_device
from .nn.attention import MultiheadAttention

_QKV = ("q_proj", "k_proj", "v_proj")


def _as_numpy(value):
    """A NumPy array from an array or anything torch-like (duck-typed: .detach().cpu().numpy())."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return numpy.asarray(value)


def _attention_prefixes(module):
    return [f"{name}." if name else "" for name, m in module.named_modules() if isinstance(m, MultiheadAttention)]


def load_torch_state_dict(module, state_dict, strict=True):
    """Load a state dict in PyTorch's names (arrays, or torch tensors) into ``module``.

    Packed attention weights are split into our separate projections; every other name passes
    through. Missing, unexpected and mis-shaped keys raise an error listing them (strict).
    """
    converted = {k: _as_numpy(v) for k, v in state_dict.items()}
    for prefix in _attention_prefixes(module):
        for kind in ("weight", "bias"):
            packed = converted.pop(f"{prefix}in_proj_{kind}", None)
            if packed is None:
                continue
            if packed.shape[0] % 3:
                raise ValueError(
                    f"load_torch_state_dict: {prefix}in_proj_{kind} has shape {packed.shape}; "
                    "its first axis must hold query, key and value (3 × embed_dim)"
                )
            for name, part in zip(_QKV, numpy.split(packed, 3, axis=0)):
                converted[f"{prefix}{name}.{kind}"] = part
    return module.load_state_dict(converted, strict=strict)


def to_torch_state_dict(module):
    """``module``'s state dict in PyTorch's names, as NumPy arrays (attention weights packed)."""
    out = {k: to_device(v, "cpu") for k, v in module.state_dict().items()}
    for prefix in _attention_prefixes(module):
        for kind in ("weight", "bias"):
            keys = [f"{prefix}{name}.{kind}" for name in _QKV]
            if all(k in out for k in keys):
                out[f"{prefix}in_proj_{kind}"] = numpy.concatenate([out.pop(k) for k in keys], axis=0)
    return out
