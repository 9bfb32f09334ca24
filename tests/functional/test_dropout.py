"""dropout: inverted dropout with a saved mask.

Randomness rules out a value-for-value comparison with PyTorch, so the checks are:
1. gradcheck in float64 with a freshly seeded generator per call (the same mask every time);
2. a composed twin: x times the forward's own mask times 1/(1 - p), from primitives;
3. statistics: the kept fraction is 1 - p and E[y] = x; PyTorch's kept values are x/(1 - p) too;
4. the mask is saved and reused: dx = dy · mask / (1 - p), even for a second backward;
5. reproducibility with a seed; the identity cases (p = 0, eval) return x itself; p = 1 gives zeros;
plus every backend through the ``xp`` fixture, and bad input.
"""
from __future__ import annotations

import numpy as np
import pytest

from nptransformer import OpError, Tensor, get_array_module, gradcheck
from nptransformer import functional as F
from nptransformer.backend import to_device


def _x(rng, shape, dtype=np.float64, wrap=np.asarray):
    """Inputs bounded away from 0, so that y == 0 exactly where the mask dropped an element."""
    x = rng.standard_normal(shape)
    return Tensor(wrap((np.sign(x) * (np.abs(x) + 0.1)).astype(dtype)), requires_grad=True)


# --------------------------------------------------------------------------- 1. gradcheck
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_gradcheck(p, rng):
    assert gradcheck(lambda a: F.dropout(a, p, rng=np.random.default_rng(7)), [_x(rng, (3, 5))])


# --------------------------------------------------------------------------- 2. composed twin
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_matches_composed_twin_with_the_same_mask(p, rng):
    fused = _x(rng, (4, 6))
    composed = Tensor(fused.data, requires_grad=True)
    y = F.dropout(fused, p, rng=np.random.default_rng(3))
    mask = Tensor((y.numpy() != 0).astype(np.float64))  # the mask the forward drew
    y_twin = composed * mask * (1 / (1 - p))
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    y_twin.backward(dy)
    np.testing.assert_allclose(y.numpy(), y_twin.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.grad, composed.grad, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- 3. statistics
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_is_one_minus_p_and_the_mean_is_preserved(p):
    n = 200_000
    y = F.dropout(Tensor(np.ones(n, dtype=np.float32)), p, rng=np.random.default_rng(0)).numpy()
    kept = y != 0
    sd = np.sqrt(p * (1 - p) / n)  # standard deviation of the kept fraction
    assert abs(kept.mean() - (1 - p)) < 5 * sd
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)  # survivors scaled by 1/(1 - p)
    assert abs(y.mean() - 1) < 5 * sd / (1 - p)  # E[y] = x


def test_dropout_is_independent_across_elements():
    """Neighbouring elements are dropped independently: P(both kept) = (1 - p)²."""
    n, p = 100_000, 0.5
    kept = F.dropout(Tensor(np.ones((n, 2))), p, rng=np.random.default_rng(1)).numpy() != 0
    both = (kept[:, 0] & kept[:, 1]).mean()
    assert abs(both - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kept_values_and_gradients_scale_like_torch(torch, dtype, rng):
    """Masks differ between libraries; what survives must be scaled the same way, in both passes."""
    p, tol = 0.3, {np.float64: 1e-10, np.float32: 1e-5}[dtype]
    x = _x(rng, (50, 40), dtype)
    y = F.dropout(x, p, rng=np.random.default_rng(0))
    y.backward(np.ones(y.shape, dtype=dtype))
    x_t = torch.tensor(x.data, requires_grad=True)
    torch.manual_seed(0)
    y_t = torch.nn.functional.dropout(x_t, p)
    y_t.backward(torch.ones_like(y_t))
    kept, kept_t = y.numpy() != 0, y_t.detach().numpy() != 0
    np.testing.assert_allclose(y.numpy()[kept], x.data[kept] / (1 - p), rtol=tol)
    np.testing.assert_allclose(y_t.detach().numpy()[kept_t], x.data[kept_t] / (1 - p), rtol=tol)
    np.testing.assert_allclose(x.grad, kept / (1 - p), rtol=tol)
    np.testing.assert_allclose(x_t.grad.numpy(), kept_t / (1 - p), rtol=tol)
    assert y.dtype == dtype and x.grad.dtype == dtype


# --------------------------------------------------------------------------- 4. the saved mask
def test_backward_reuses_the_forward_mask(rng):
    """dx = dy · mask / (1 - p) with the forward's mask, also for a second (retained) backward."""
    p = 0.4
    x = _x(rng, (6, 7))
    y = F.dropout(x, p, rng=np.random.default_rng(5))
    mask = y.numpy() != 0
    dy = rng.standard_normal(y.shape)
    y.backward(dy, retain_graph=True)
    np.testing.assert_array_equal(x.grad, dy * mask * (1 / (1 - p)))
    y.backward(dy)
    np.testing.assert_allclose(x.grad, 2 * dy * mask / (1 - p), rtol=1e-15)
    assert 0 < mask.sum() < mask.size


# --------------------------------------------------------------------------- 5. seeds, identity, p = 1
def test_a_seeded_generator_reproduces_the_mask_and_float_dtypes_share_it(rng):
    x = _x(rng, (8, 9))
    first = F.dropout(x, 0.5, rng=np.random.default_rng(42)).numpy()
    again = F.dropout(x, 0.5, rng=np.random.default_rng(42)).numpy()
    other = F.dropout(x, 0.5, rng=np.random.default_rng(43)).numpy()
    x32 = Tensor(x.data.astype(np.float32))
    in_float32 = F.dropout(x32, 0.5, rng=np.random.default_rng(42)).numpy()
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    np.testing.assert_array_equal(in_float32 != 0, first != 0)
    gen = np.random.default_rng(42)  # one generator advances: consecutive calls differ
    assert (F.dropout(x, 0.5, rng=gen).numpy() != F.dropout(x, 0.5, rng=gen).numpy()).any()
    unseeded = [F.dropout(x, 0.5).numpy() != 0 for _ in range(2)]
    assert (unseeded[0] != unseeded[1]).any()  # a fresh unseeded generator per call


@pytest.mark.parametrize("kwargs", [{"p": 0.0}, {"p": 0.5, "training": False}, {"p": 0, "training": False}])
def test_p_zero_or_eval_mode_returns_the_same_tensor(kwargs, rng):
    x = _x(rng, (3, 4))
    assert F.dropout(x, **kwargs) is x


def test_p_one_gives_zeros_and_zero_gradients(rng):
    x = _x(rng, (3, 4))
    y = F.dropout(x, 1.0, rng=np.random.default_rng(0))
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(y.numpy(), 0)
    np.testing.assert_array_equal(x.grad, 0)


# --------------------------------------------------------------------------- every backend
def test_dropout_runs_on_every_backend(xp, rng):
    """The mask lives on x's device (strict raises if a NumPy mask meets its arrays)."""
    x = _x(rng, (4, 5), np.float32, xp.asarray)
    y = F.dropout(x, 0.5, rng=np.random.default_rng(0))
    assert get_array_module(y.data) is xp and y.dtype == np.float32
    y.backward(xp.asarray(np.ones(y.shape, dtype=np.float32)))
    assert get_array_module(x.grad) is xp and x.grad.dtype == np.float32
    x_np, y_np = to_device(x.data, "cpu"), y.numpy()
    reference = F.dropout(Tensor(x_np), 0.5, rng=np.random.default_rng(0)).numpy()  # same seed on NumPy
    np.testing.assert_array_equal(y_np, reference)
    np.testing.assert_array_equal(to_device(x.grad, "cpu"), (y_np != 0) * np.float32(2))


def test_dropout_gradcheck_on_every_backend(xp, rng):
    x = _x(rng, (3, 4), np.float64, xp.asarray)
    assert gradcheck(lambda a: F.dropout(a, 0.5, rng=np.random.default_rng(1)), [x])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_dropout_rejects_a_p_outside_zero_one(p, rng):
    with pytest.raises(OpError, match=r"dropout: p=.* \(x shape \(3, 4\)\); expected a probability in \[0, 1\]"):
        F.dropout(_x(rng, (3, 4)), p)


def test_dropout_rejects_a_bad_generator_and_integer_input(rng):
    with pytest.raises(OpError, match=r"dropout: rng must be a numpy.random.Generator or None, got int .*default_rng\(seed\)"):
        F.dropout(_x(rng, (3, 4)), 0.5, rng=0)
    with pytest.raises(OpError, match=r"dropout: rng must be a numpy.random.Generator or None, got RandomState"):
        F.dropout(_x(rng, (3, 4)), 0.5, rng=np.random.RandomState(0))
    with pytest.raises(OpError, match=r"dropout: expects floating-point x, got dtype int64 \(shape \(2,\)\)"):
        F.dropout(Tensor(np.array([1, 2])), 0.5, rng=np.random.default_rng(0))
