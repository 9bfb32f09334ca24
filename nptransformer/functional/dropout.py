"""Inverted dropout: zero each element with probability p, scale the survivors by 1/(1 - p).

The random keep-mask is drawn once, in the forward, and saved: the backward multiplies dy by the
very same mask and scale, so the gradient flows exactly through the elements that were kept.
Derivation: docs/derivations/dropout.md
"""
from __future__ import annotations

import numbers

import numpy

from ..autograd import Function, OpError, _is_float
from ..backend import get_array_module


class Dropout(Function):
    """y = x · m / (1 - p), with m_i = 1 with probability 1 - p and 0 otherwise (drawn once);
    dx = dy · m / (1 - p), with the same saved m. For p = 1 every m_i is 0 and y = dx = 0.
    Derivation: docs/derivations/dropout.md"""

    name = "dropout"

    @staticmethod
    def forward(ctx, x, p, rng):
        if not _is_float(x.dtype):
            raise OpError(f"dropout: expects floating-point x, got dtype {x.dtype} (shape {x.shape})")
        xp = get_array_module(x)
        # The mask is drawn by NumPy's Generator on the host, then moved to x's device with an
        # explicit xp.asarray (a no-op for NumPy): one seed gives the same mask on every device.
        keep = rng.random(x.shape, dtype=numpy.float32) >= p  # True with probability 1 - p
        if xp is not numpy:
            keep = xp.asarray(keep)
        ctx.scale = 1.0 / (1.0 - p) if p < 1 else 0.0
        ctx.save_for_backward(keep)  # a boolean mask: a quarter of a float32 copy of x
        y = x * keep
        y *= ctx.scale
        return y

    @staticmethod
    def backward(ctx, dy):
        (keep,) = ctx.saved
        dx = dy * keep  # in the forward y = x · m · scale; so dx = dy · m · scale
        dx *= ctx.scale
        return dx


def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout, as ``torch.nn.functional.dropout``: during training, each element of x
    is zeroed with probability ``p`` and the others are scaled by 1/(1 - p), so E[y] = x.

    With ``training=False`` or ``p == 0``, returns ``x`` itself (the same Tensor, no copy).
    ``p`` must be in [0, 1]; p == 1 gives zeros, as in PyTorch.
    ``rng``: a ``numpy.random.Generator``; pass a seeded one (``numpy.random.default_rng(0)``) for
    reproducible masks. None draws from a fresh, unseeded generator. The mask is drawn with NumPy
    on the host and copied to x's device (for CuPy, one host-to-device copy of a boolean mask).
    Backward: dx = dy · m / (1 - p) with the mask m saved by the forward.
    Derivation: docs/derivations/dropout.md
    """
    # float and int first: a check against the numbers.Real ABC alone takes longer than an eval-mode call
    if isinstance(p, bool) or not isinstance(p, (float, int, numbers.Real)) or not 0 <= p <= 1:
        raise OpError(f"dropout: p={p!r} (x shape {getattr(x, 'shape', None)}); expected a probability in [0, 1]")
    if rng is not None and not isinstance(rng, numpy.random.Generator):
        raise OpError(
            f"dropout: rng must be a numpy.random.Generator or None, got {type(rng).__name__} "
            f"(x shape {getattr(x, 'shape', None)}); make one with numpy.random.default_rng(seed)"
        )
    if not training or p == 0:
        return x
    return Dropout.apply(x, float(p), numpy.random.default_rng() if rng is None else rng)
