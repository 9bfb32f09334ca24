"""Reference solutions to the backward-pass exercises of ``nptransformer.exercises``.

Try each exercise in its notebook first; ``nptransformer.exercises.check`` tells you whether your
answer is right and, when it is not, where. Each function below has the signature of its
exercise and works on plain float64 NumPy arrays. Every one is the same algebra as the package's
fused op (tests/test_exercises.py holds them to the op's own backward within 1e-12), written out
as a learner would: the derivation of each is in the ``docs/derivations/`` page named beside it.
"""
from __future__ import annotations

import math

import numpy as np


def mul_backward(a, b, dout):
    """out = a * b.  Each input's gradient is dout times the other input."""
    return dout * b, dout * a


def tanh_backward(y, dy):
    """y = tanh(x).  dy/dx = 1 - tanh(x)² = 1 - y², so dx = dy (1 - y²)."""
    return dy * (1 - y * y)


def softmax_backward(y, dy):
    """y = softmax(x) along the last axis.  dx = y ⊙ (dy - Σ_j dy_j y_j)  (docs/derivations/softmax.md)."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, dy):
    """y = log_softmax(x) along the last axis.  dx = dy - exp(y) Σ_j dy_j  (docs/derivations/cross_entropy.md)."""
    return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)


def cross_entropy_backward(p, target, dloss, label_smoothing):
    """loss = mean over the N rows of -Σ_c q_c log p_c, with q = (1 - ε) onehot(target) + ε / V.

    dlogits = (p - q) dloss / N  (docs/derivations/cross_entropy.md).
    """
    N, V = p.shape
    q = np.full_like(p, label_smoothing / V)  # ε / V on every class ...
    q[np.arange(N), target] += 1 - label_smoothing  # ... and 1 - ε more on the target
    return (p - q) * (dloss / N)


def layer_norm_backward(xhat, rstd, weight, dy):
    """y = x̂ γ + β with x̂ = (x - μ)/σ over the last axis (C features).

    With g = dy γ:  dx = (1/σ) (g - mean(g) - x̂ mean(g x̂)),  dγ = Σ dy x̂,  dβ = Σ dy,
    the sums over every leading axis  (docs/derivations/layer_norm.md).
    """
    g = dy * weight
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    lead = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(axis=lead), dy.sum(axis=lead)


def attention_backward(q, k, v, p, dout, scale):
    """out = P V with P = softmax(scale · Q Kᵀ + M) along the keys.

    dV = Pᵀ dO,  dP = dO Vᵀ,  dZ = P ⊙ (dP - rowsum(dP ⊙ P)),  dQ = scale dZ K,  dK = scale dZᵀ Q
    (docs/derivations/attention.md).
    """
    dv = p.swapaxes(-1, -2) @ dout  # (..., S, T) @ (..., T, Dv) -> (..., S, Dv)
    dp = dout @ v.swapaxes(-1, -2)  # (..., T, Dv) @ (..., Dv, S) -> (..., T, S)
    dz = p * (dp - (dp * p).sum(axis=-1, keepdims=True))  # the softmax backward, row by row
    dq = scale * (dz @ k)  # (..., T, S) @ (..., S, D) -> (..., T, D)
    dk = scale * (dz.swapaxes(-1, -2) @ q)  # (..., S, T) @ (..., T, D) -> (..., S, D)
    return dq, dk, dv


def gelu_backward(x, cdf, dy):
    """y = x Φ(x) with cdf = Φ(x).  dy/dx = Φ(x) + x φ(x), φ(x) = exp(-x²/2)/√(2π)  (docs/derivations/gelu.md)."""
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return dy * (cdf + x * pdf)
