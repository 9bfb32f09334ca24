"""GELU, in both of PyTorch's forms, and the error function it needs.

GELU(x) = x Φ(x), where Φ is the standard normal CDF: Φ(x) = (1 + erf(x/√2))/2 = erfc(-x/√2)/2.
NumPy has no ``erf``, so ``erf`` and ``erfc`` below evaluate W. J. Cody's rational Chebyshev
approximations ("Rational Chebyshev approximations for the error function", Math. Comp. 23,
1969, pp. 631-638; the coefficients of his SPECFUN routine CALERF), vectorized with ``xp``
operations. In float64 they are within a few units in the last place of the exact values
(checked against 30-digit mpmath; in the far right tail ``erfc`` is closer than
``scipy.special.erfc``). The exact GELU of a small float32 array (a decoding step's) takes one
formula instead, Numerical Recipes' erfc evaluated in float64 (``_gelu_small``).
``relu`` is a primitive (``nptransformer.functional.primitives.relu``).
Derivation: docs/derivations/gelu.md
"""
from __future__ import annotations

import math

import numpy

from ..autograd import Function, OpError, _is_float
from ..backend import device_of, get_array_module

APPROXIMATIONS = ("none", "tanh")

SQRT_HALF = math.sqrt(0.5)  # 1/√2
INV_SQRT_PI = 1 / math.sqrt(math.pi)  # 1/√π
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # 1/√(2π), the normal density's factor
TANH_SCALE = math.sqrt(2 / math.pi)  # √(2/π), the tanh form's k
TANH_CUBIC = 0.044715  # the tanh form's κ

# Cody's three intervals for y = |x| (his THRESH and 4), and the point beyond which erfc(y) is
# below half the smallest subnormal double, so it rounds to 0 (Cody's XBIG = 26.543 stops at the
# smallest normal double instead).
ERF_NEAR_ZERO = 0.46875
ERFC_FAR = 4.0
ERFC_UNDERFLOW = 27.3
BLOCK = 2**17  # elements per block of the elementwise formulas on the CPU (see blockwise)
SMALL = 2**13  # float32 arrays of at most this many elements take _gelu_small's formula
# Numerator and denominator coefficients of each interval's rational function, in Cody's order
# (see _rational): erf(x) = x R_A,B(x²) near zero; erfc(y) = exp(-y²) R_C,D(y) up to 4;
# erfc(y) = exp(-y²) (1/√π - r R_P,Q(r)) / y with r = 1/y² beyond.
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
# Numerical Recipes' erfcc (Press, Teukolsky, Vetterling and Flannery, Numerical Recipes in C,
# 2nd ed., 1992, section 6.2): erfc(z) = t exp(-z² + c0 + c1 t + ... + c9 t⁹), t = 1/(1 + z/2),
# for every z >= 0, with a fractional error below 1.2e-7.
_NR = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
       1.48851587, -0.82215223, 0.17087277)


def _rational(t, p, q):
    """N(t)/D(t) with n = len(q): N = p[-1] tⁿ + p[0] tⁿ⁻¹ + ... + p[n-1], D = tⁿ + q[0] tⁿ⁻¹ + ... + q[n-1].

    Horner's rule, nested as in Cody's code, updating two arrays in place.
    """
    num = t * p[-1]
    den = t.copy()
    for p_i, q_i in zip(p[:-2], q[:-1]):
        num += p_i
        num *= t
        den += q_i
        den *= t
    num += p[-2]
    den += q[-1]
    num /= den
    return num


def _exp_neg_square(y):
    """exp(-y²), without letting the rounding error of y² into the exponent.

    y² rounded is off by up to y² · 1.1e-16 (7e-14 near y = 26), and exp turns an absolute error
    in its argument into the same relative error in its result. Split y = s + d with s = y
    rounded down to a multiple of 1/16, whose square is exact in floating point; then
    y² = s² + (y - s)(y + s) and exp(-y²) = exp(-s²) exp(-(y - s)(y + s)), with the small second
    exponent rounded only relative to itself.
    """
    xp = get_array_module(y)
    s = xp.trunc(y * 16) / 16
    return xp.exp(-s * s) * xp.exp(-(y - s) * (y + s))


def _erfc_mid(y):
    """erfc(y) for 0.46875 < y <= 4 (Cody's second interval)."""
    return _rational(y, _C, _D) * _exp_neg_square(y)


def _erfc_far(y):
    """erfc(y) for y > 4 (Cody's third interval), with r = 1/y²; exactly 0 from 27.3 on."""
    xp = get_array_module(y)
    y = xp.minimum(y, ERFC_UNDERFLOW)  # keeps y = inf from making inf - inf in _exp_neg_square
    r = 1 / (y * y)
    return (INV_SQRT_PI - r * _rational(r, _P, _Q)) / y * _exp_neg_square(y)


def blockwise(fn, *arrays):
    """``fn(*arrays)`` for an elementwise ``fn`` of arrays of one shape, BLOCK elements at a time.

    An elementwise formula of a dozen NumPy operations makes a dozen passes over its arrays, each
    into a new temporary array. On large arrays every pass goes through main memory (and every new
    array through fresh pages); on blocks that fit in the processor's cache the same passes run
    several times faster, and the temporaries add little to the peak memory. Arrays of one block
    or less, and arrays on a GPU (whose memory is fast and whose every kernel launch costs), are
    passed to ``fn`` whole.
    """
    xp = get_array_module(*arrays)
    n = arrays[0].size
    if n <= BLOCK or device_of(arrays[0]) == "cuda":
        return fn(*arrays)
    flats = [a.reshape(-1) for a in arrays]
    out = None
    for start in range(0, n, BLOCK):
        part = fn(*(f[start : start + BLOCK] for f in flats))
        if out is None:
            out = xp.empty(n, dtype=part.dtype)
        out[start : start + BLOCK] = part
    return out.reshape(arrays[0].shape)


def _erf_or_erfc(x, complement):
    """erf(x), or erfc(x) when ``complement``: each element evaluated in one of Cody's intervals.

    Near zero, erf(x) = x R(x²) and erfc = 1 - erf. Elsewhere the interval gives erfc(|x|), and
    the sign of x turns it into erfc(x) = erfc(|x|) or 2 - erfc(|x|), erf(x) = ±(1 - erfc(|x|)).
    Each interval's elements are gathered by integer positions (``nonzero`` of the flat mask), so
    no element pays for the other formulas. Boolean-mask indexing and ``where`` would do the same,
    but on a mask with no pattern (the signs and sizes of activations) NumPy runs them ten times
    slower.
    """
    xp = get_array_module(x)
    flat = x.reshape(-1)
    y = xp.abs(flat)
    out = xp.empty(flat.shape, dtype=flat.dtype)
    near, far = y <= ERF_NEAR_ZERO, y > ERFC_FAR
    mid = ~(near | far)  # NaN lands here and comes out NaN
    near = xp.nonzero(near)[0]  # positions; nonzero, not flatnonzero: the mask is flat already
    x_near = flat[near]
    erf_near = x_near * _rational(x_near * x_near, _A, _B)
    out[near] = 1 - erf_near if complement else erf_near
    for part, erfc_tail in ((mid, _erfc_mid), (far, _erfc_far)):
        part = xp.nonzero(part)[0]
        if part.size == 0:  # often so for "far": skip its two dozen calls on empty arrays
            continue
        x_part = flat[part]
        tail = erfc_tail(xp.abs(x_part))  # erfc(|x|)
        if complement:
            out[part] = tail + (x_part < 0) * (2 - 2 * tail)  # 2 - erfc(|x|) where x < 0
        else:
            out[part] = xp.copysign(1 - tail, x_part)
    return out.reshape(x.shape)


def erf(x):
    """The error function erf(x) = 2/√π ∫₀ˣ exp(-t²) dt of a floating-point array, elementwise.

    A plain array function (not a Tensor op), within a few units in the last place in float64.
    """
    return blockwise(lambda block: _erf_or_erfc(block, complement=False), x)


def erfc(x):
    """The complementary error function erfc(x) = 1 - erf(x) of a floating-point array, elementwise.

    For large positive x, erfc(x) is tiny and 1 - erf(x) would round to 0; here it comes from its
    own rational approximation, accurate to a few units in the last place (down to 1e-323).
    """
    return blockwise(lambda block: _erf_or_erfc(block, complement=True), x)


def _gelu_small(x):
    """y = x Φ(x) for a small float32 array: Numerical Recipes' erfc in float64, rounded once.

    With a = |x|/√2, Φ(x) = erfc(a)/2 for x <= 0 and 1 - erfc(a)/2 for x > 0, and one formula
    gives erfc(a) for every a (fractional error below 1.2e-7): about 35 array operations on the
    whole array, where Cody's intervals take 80 to 120 on gathered parts. On the few thousand
    values of a decoding step an operation costs its call more than its arithmetic, so this is
    about twice as fast there; on large arrays its float64 arithmetic makes it slower than the
    intervals in float32, so large arrays keep those (``Gelu.forward`` picks by size). Evaluated in
    float64, y lands within 2.3 float32 units in the last place of the exact value. The
    intervals in float32 arithmetic are within 2.7 units for x > -0.66 (Cody's first interval)
    and up to 200 units off in the left tail, where the rounding of the exponent -a² to float32
    becomes the relative error of exp.
    """
    xp = get_array_module(x)
    z = x.astype(numpy.float64)
    a = xp.abs(z)
    a *= SQRT_HALF  # a = |x|/√2
    t = a * 0.5
    t += 1
    t = xp.reciprocal(t, out=t)  # t = 1/(1 + a/2)
    poly = t * _NR[-1]  # c0 + c1 t + ... + c9 t⁹, by Horner's rule
    for c in reversed(_NR[1:-1]):
        poly += c
        poly *= t
    poly += _NR[0]
    a *= a
    poly -= a  # -a² + c0 + c1 t + ... + c9 t⁹
    half_erfc = xp.exp(poly, out=poly)
    half_erfc *= t
    half_erfc *= 0.5  # erfc(a)/2 = Φ(-|x|)
    cdf = xp.where(z > 0, 1 - half_erfc, half_erfc)  # Φ(x), by the symmetry Φ(x) = 1 - Φ(-x)
    cdf *= z
    return cdf.astype(x.dtype)  # y = x Φ(x), rounded once to float32


def _gelu_exact(x):
    """y = x Φ(x), the exact GELU of an array, by Cody's erfc."""
    xp = get_array_module(x)
    cdf = _erf_or_erfc(x * -SQRT_HALF, complement=True)  # Φ(x) = erfc(-x/√2)/2: accurate far into the left tail
    cdf *= 0.5
    return xp.multiply(x, cdf, out=cdf)  # y = x Φ(x), in Φ's buffer


def _cdf_from_output(x, y):
    """Φ(x) = y / x, from the input x and the output y = x Φ(x) of the exact GELU.

    Where |x| is below the smallest normal number, Φ(x) = 1/2 to every digit, and y / x is
    0 / 0 at x = 0 or loses digits to a subnormal y: those entries are set to 1/2 after.
    """
    xp = get_array_module(x, y)
    with numpy.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 at x = 0, replaced below
        cdf = y / x
    xp.copyto(cdf, 0.5, where=xp.abs(x) < xp.finfo(x.dtype).tiny)
    return cdf


def _gelu_exact_grad(x, y, dy):
    """dx = dy (Φ(x) + x φ(x)) for the exact GELU, from its input x, output y and upstream dy."""
    xp = get_array_module(x, y, dy)
    cdf = _cdf_from_output(x, y)  # Φ(x) = y / x
    # φ(x) underflows to exactly 0 beyond |x| = 40, so clipping there changes nothing
    # and keeps x² finite.
    xc = xp.clip(x, -40.0, 40.0)
    pdf = xp.exp(-0.5 * xc * xc) * INV_SQRT_2PI  # φ(x)
    # In the forward y = x Φ(x); so dy/dx = Φ(x) + x φ(x).
    return dy * (cdf + xc * pdf)


class Gelu(Function):
    """GELU(x) = x Φ(x), exactly (approximate="none") or with PyTorch's tanh approximation:

        "none":  y = x Φ(x),  Φ(x) = erfc(-x/√2)/2            dx = dy (Φ(x) + x φ(x)),  φ(x) = exp(-x²/2)/√(2π)
        "tanh":  y = x (1 + t)/2,  t = tanh(k (x + κ x³))     dx = dy ((1 + t)/2 + x (1 - t²) k (1 + 3κ x²)/2)
                 with k = √(2/π), κ = 0.044715
    Derivation: docs/derivations/gelu.md"""

    name = "gelu"

    @staticmethod
    def forward(ctx, x, approximate="none"):
        if approximate not in APPROXIMATIONS:
            raise OpError(f"gelu: unknown approximate={approximate!r} (x shape {x.shape}); expected one of {APPROXIMATIONS}")
        if not _is_float(x.dtype):
            raise OpError(f"gelu: expects floating-point x, got dtype {x.dtype} (shape {x.shape})")
        xp = get_array_module(x)
        ctx.approximate = approximate
        if approximate == "none":
            if x.dtype == numpy.float32 and x.size <= SMALL:  # a decoding step's: one cheap formula
                y = _gelu_small(x)  # y = x Φ(x)
            else:
                y = blockwise(_gelu_exact, x)  # y = x Φ(x)
            # Saved: x and y. y costs no memory of its own where the next op saves it too (a
            # Transformer's second feed-forward layer does); the backward reads Φ(x) = y / x back
            # instead of keeping Φ(x) as a third array.
            ctx.save_for_backward(x, y)
            return y
        # Beyond |x| = 10, tanh(k (x + κ x³)) is exactly ±1 in float32 and float64: clipping
        # changes no result and keeps x³ from overflowing.
        xc = xp.clip(x, -10.0, 10.0)
        t = xp.tanh(TANH_SCALE * (xc + TANH_CUBIC * xc * xc * xc))
        ctx.save_for_backward(x, t)
        return (0.5 * x) * (1 + t)

    @staticmethod
    def cdf(ctx):
        """Φ(x) of the exact form, read back from what the forward saved (see _cdf_from_output)."""
        return _cdf_from_output(*ctx.saved)

    @staticmethod
    def backward(ctx, dy):
        xp = get_array_module(dy)
        if ctx.approximate == "none":
            x, y = ctx.saved
            return blockwise(_gelu_exact_grad, x, y, dy)
        x, t = ctx.saved
        xc = xp.clip(x, -10.0, 10.0)  # where |x| > 10, 1 - t² is exactly 0: the term vanishes either way
        # In the forward y = x (1 + t)/2 with t = tanh(u), u = k (x + κ x³); so
        # dy/dx = (1 + t)/2 + (x/2) (1 - t²) du/dx, with du/dx = k (1 + 3κ x²).
        dudx = TANH_SCALE * (1 + 3 * TANH_CUBIC * xc * xc)
        return dy * (0.5 * (1 + t) + (0.5 * xc) * (1 - t * t) * dudx)


def gelu(x, approximate="none"):
    """The Gaussian Error Linear Unit, as ``torch.nn.functional.gelu``.

    approximate="none" (the default): y = x Φ(x), with Φ the standard normal CDF computed from
    ``erfc``; backward dx = dy (Φ(x) + x φ(x)).
    approximate="tanh": y = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), the form GPT-2 uses;
    backward dx = dy (0.5 (1 + t) + 0.5 x (1 - t²) √(2/π) (1 + 3 · 0.044715 x²)).
    The forward saves x and its output y (or t); the backward reads Φ(x) = y / x back, so it
    evaluates no error function and keeps no third array.
    Derivation: docs/derivations/gelu.md
    """
    return Gelu.apply(x, approximate=approximate)
