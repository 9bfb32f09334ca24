"""gelu (both forms) and the erf / erfc it is built on.

1. erf and erfc against scipy.special and mpmath (each skipped when not installed), float64;
2. gelu: gradcheck in float64 for both forms; a composed twin for the tanh form (the exact form
   needs erf, which is no primitive: it is pinned by gradcheck, PyTorch and the erf checks); the
   formula of small float32 arrays within a few units in the last place;
3. PyTorch parity, forward and gradients (1e-10 in float64, 1e-5 in float32), both forms;
plus every backend through the ``xp`` fixture, huge inputs, and bad input.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from nptransformer import OpError, Tensor, get_array_module, gradcheck
from nptransformer import functional as F
from nptransformer.backend import to_device
from nptransformer.functional import primitives
from nptransformer.functional.activations import erf, erfc

FORMS = ("none", "tanh")
TOLERANCES = {np.float64: 1e-10, np.float32: 1e-5}
# Both sides of each of Cody's interval edges (0.46875, 4, 27.3), zeros of both signs, tiny values.
EDGES = np.array([0.0, -0.0, 1e-300, -1e-20, 0.46875, 0.4687500001, 4.0, 4.000000001, 27.29, 27.31, 30.0])


def _erf_grid():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-7, 7, 2801), rng.uniform(-28, 28, 2000), rng.standard_normal(200) * 1e-6, EDGES])
    return np.concatenate([x, -x])


# --------------------------------------------------------------------------- 1. erf and erfc
def test_erf_and_erfc_match_scipy():
    special = pytest.importorskip("scipy.special")
    x = _erf_grid()
    np.testing.assert_allclose(erf(x), special.erf(x), rtol=1e-15, atol=0)
    # scipy's own erfc loses digits in the right tail (2e-15 relative at x = 5, 5e-14 near 24,
    # measured against mpmath) and flushes to 0 from 26.6 on; compare where it is accurate.
    close = x < 4
    np.testing.assert_allclose(erfc(x[close]), special.erfc(x[close]), rtol=2e-15, atol=0)


def test_erf_and_erfc_match_mpmath_to_a_few_units_in_the_last_place():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    x = np.concatenate([np.linspace(-6, 27, 331), EDGES[:-1], -EDGES])
    exact_erf = np.array([float(mpmath.erf(mpmath.mpf(v))) for v in x])
    exact_erfc = np.array([float(mpmath.erfc(mpmath.mpf(v))) for v in x])
    np.testing.assert_allclose(erf(x), exact_erf, rtol=1e-15, atol=0)
    normal = exact_erfc >= np.finfo(np.float64).tiny  # below, erfc is subnormal: fewer bits to be right in
    np.testing.assert_allclose(erfc(x[normal]), exact_erfc[normal], rtol=1e-15, atol=0)
    np.testing.assert_allclose(erfc(x[~normal]), exact_erfc[~normal], rtol=0, atol=1e-323)


def test_erf_and_erfc_limits_and_special_values():
    x = np.array([np.inf, -np.inf, 40.0, -40.0, np.nan, 0.0])
    np.testing.assert_array_equal(erf(x), [1.0, -1.0, 1.0, -1.0, np.nan, 0.0])
    np.testing.assert_array_equal(erfc(x), [0.0, 2.0, 0.0, 2.0, np.nan, 1.0])
    assert math.copysign(1, erf(np.array([-0.0]))[0]) == -1  # erf is odd, down to the signed zero
    np.testing.assert_allclose(erf(np.array(0.5)), math.erf(0.5), rtol=1e-15)  # 0-d arrays work
    x32 = np.linspace(-5, 5, 101, dtype=np.float32)
    assert erf(x32).dtype == np.float32 and erfc(x32).dtype == np.float32
    np.testing.assert_allclose(erf(x32), [math.erf(v) for v in x32.astype(float)], rtol=0, atol=3e-7)


def test_erf_and_erfc_in_blocks_equal_the_whole_array(monkeypatch):
    """On the CPU erf, erfc and the exact GELU go through arrays in blocks; block edges change no value."""
    from nptransformer.functional import activations

    x = _erf_grid().reshape(2, -1)  # two rows: the blocks cut across them
    dy = np.random.default_rng(1).standard_normal(x.shape)

    def results():
        t = Tensor(x, requires_grad=True)
        y = F.gelu(t)
        y.backward(dy)
        return erf(x), erfc(x), y.numpy(), t.grad

    whole = results()
    monkeypatch.setattr(activations, "BLOCK", 7)  # thousands of blocks, the last one partial
    for blocked, one in zip(results(), whole):
        np.testing.assert_array_equal(blocked, one)
    assert erf(x[:, :0]).shape == (2, 0)


# --------------------------------------------------------------------------- 2. gelu: gradcheck and twin
@pytest.mark.parametrize("approximate", FORMS)
def test_gelu_gradcheck(approximate, rng):
    # each of Cody's intervals for x/√2 (|x| < 0.66, < 5.66, beyond) and the tanh clip at 10
    x_np = np.concatenate([rng.standard_normal(12) * 2, [-12.0, -6.0, -0.5, 0.0, 0.6, 3.0, 7.0, 11.0]])
    assert gradcheck(lambda a: F.gelu(a, approximate=approximate), [Tensor(x_np, requires_grad=True)])


def _gelu_tanh_twin(x):
    inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
    return x * 0.5 * (inner.tanh() + 1)


def test_gelu_tanh_matches_composed_twin(rng):
    x_np = np.concatenate([rng.standard_normal((3, 7)).ravel() * 3, [-9.0, 0.0, 9.5]])
    dy = rng.standard_normal(x_np.shape)
    fused, composed = Tensor(x_np, requires_grad=True), Tensor(x_np, requires_grad=True)
    y, y_twin = F.gelu(fused, approximate="tanh"), _gelu_tanh_twin(composed)
    y.backward(dy)
    y_twin.backward(dy)
    np.testing.assert_allclose(y.numpy(), y_twin.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.grad, composed.grad, rtol=0, atol=1e-10)


def test_gelu_exact_derivative_is_cdf_plus_x_times_density(rng):
    """dy/dx = Φ(x) + x φ(x), with Φ and φ from math.erf and math.exp (a reference outside our erf)."""
    x_np = rng.standard_normal(50) * 3
    x = Tensor(x_np, requires_grad=True)
    F.gelu(x).backward(np.ones(50))
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x_np])
    pdf = np.exp(-0.5 * x_np**2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(x.grad, cdf + x_np * pdf, rtol=1e-13, atol=1e-15)


def test_gelu_of_small_float32_arrays_is_within_a_few_units_in_the_last_place():
    """A float32 array of at most SMALL elements takes one formula evaluated in float64
    (_gelu_small): within 2.3 units in the last place of x Φ(x) everywhere, the left tail included;
    larger arrays take Cody's intervals in float32 blocks, which agree with it to 1e-6."""
    from nptransformer.functional.activations import SMALL

    x = np.concatenate([np.linspace(-16, 16, 8 * SMALL), np.random.default_rng(5).standard_normal(SMALL) * 4]).astype(np.float32)
    x64 = x.astype(np.float64)
    exact = x64 * np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x64])
    small = np.concatenate([F.gelu(Tensor(part)).numpy() for part in np.split(x, 9)])
    assert small.dtype == np.float32
    units = np.abs(small.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert units.max() < 2.5
    np.testing.assert_allclose(F.gelu(Tensor(x)).numpy(), small, rtol=2e-5, atol=1e-6)  # one large array


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_exact_derivative_at_zero_and_subnormal_inputs(dtype):
    """The backward reads Φ(x) = y / x back from the output; at 0 and at subnormal x (where y / x
    is 0 / 0 or loses digits) it must still give Φ(x) = 1/2, and just above, the quotient."""
    tiny = np.finfo(dtype).tiny
    x_np = np.array([0.0, -0.0, tiny / 4, -tiny / 2**10, tiny, -2 * tiny, 1e-3], dtype=dtype)
    x = Tensor(x_np, requires_grad=True)
    F.gelu(x).backward(np.ones(x_np.shape, dtype=dtype))
    v = x_np.astype(float)
    expected = [0.5 * (1 + math.erf(t / math.sqrt(2))) + t * math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi) for t in v]
    assert x.grad.dtype == dtype
    np.testing.assert_allclose(x.grad, expected, rtol=2 * np.finfo(dtype).eps, atol=0)


def test_relu_is_the_primitive():
    assert F.relu is primitives.relu


# --------------------------------------------------------------------------- 3. PyTorch parity
@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("approximate", FORMS)
def test_gelu_matches_torch(torch, approximate, dtype, rng):
    x_np = np.concatenate([rng.standard_normal((4, 8)).ravel() * 3, [-30.0, -9.0, -5.0, 0.0, 5.0, 9.0, 30.0]]).astype(dtype)
    dy = rng.standard_normal(x_np.shape).astype(dtype)
    x = Tensor(x_np, requires_grad=True)
    y = F.gelu(x, approximate=approximate)
    y.backward(dy)
    x_t = torch.tensor(x_np, requires_grad=True)
    y_t = torch.nn.functional.gelu(x_t, approximate=approximate)
    y_t.backward(torch.tensor(dy))
    tol = TOLERANCES[dtype]
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), y_t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad, x_t.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- every backend
@pytest.mark.parametrize("approximate", FORMS)
def test_gelu_runs_on_every_backend(xp, approximate, rng):
    x_np = (rng.standard_normal((2, 3, 4)) * 3).astype(np.float32)
    x = Tensor(xp.asarray(x_np), requires_grad=True)
    y = F.gelu(x, approximate=approximate)
    assert get_array_module(y.data) is xp and y.dtype == np.float32
    y.backward(xp.asarray(np.ones(y.shape, dtype=np.float32)))
    assert get_array_module(x.grad) is xp and x.grad.dtype == np.float32
    x64 = x_np.astype(np.float64)
    if approximate == "none":
        cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x64.ravel()]).reshape(x64.shape)
        expected_y, expected_dx = x64 * cdf, cdf + x64 * np.exp(-0.5 * x64**2) / math.sqrt(2 * math.pi)
    else:
        t = np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3))
        expected_y = 0.5 * x64 * (1 + t)
        expected_dx = 0.5 * (1 + t) + 0.5 * x64 * (1 - t**2) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x64**2)
    np.testing.assert_allclose(y.numpy(), expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_device(x.grad, "cpu"), expected_dx, rtol=1e-5, atol=1e-6)


def test_erf_and_erfc_run_on_every_backend(xp):
    x_np = np.linspace(-6, 6, 25)
    for fn, reference in ((erf, math.erf), (erfc, math.erfc)):
        out = fn(xp.asarray(x_np))
        assert get_array_module(out) is xp
        np.testing.assert_allclose(to_device(out, "cpu"), [reference(v) for v in x_np], rtol=1e-14, atol=1e-300)


# --------------------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", FORMS)
def test_huge_inputs_give_the_identity_or_zero_without_warnings(approximate, dtype):
    """GELU(x) -> x as x -> +inf and -> 0 as x -> -inf; no overflow in x³ or x², no NaN gradient."""
    big = float(np.finfo(dtype).max) / 4
    x_np = np.array([big, 1e4, 50.0, -50.0, -1e4, -big], dtype=dtype)
    x = Tensor(x_np, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.gelu(x, approximate=approximate)
        y.backward(np.ones(6, dtype=dtype))
    np.testing.assert_array_equal(y.numpy(), np.where(x_np > 0, x_np, 0))
    np.testing.assert_array_equal(x.grad, np.where(x_np > 0, 1, 0))


# --------------------------------------------------------------------------- bad input
def test_gelu_rejects_an_unknown_form_and_integer_input():
    with pytest.raises(OpError, match=r"gelu: unknown approximate='exact' \(x shape \(3,\)\); expected one of \('none', 'tanh'\)"):
        F.gelu(Tensor(np.zeros(3)), approximate="exact")
    with pytest.raises(OpError, match=r"gelu: expects floating-point x, got dtype int64 \(shape \(2,\)\)"):
        F.gelu(Tensor(np.array([1, 2])))
