"""linear: the fused op checked three ways.

1. gradcheck in float64 over random leading shapes and feature sizes, with and without bias;
2. a composed twin (x @ weight.T + bias from primitives) agrees within 1e-10 in float64;
3. PyTorch parity, forward and gradients (1e-10 in float64, 1e-5 in float32);
plus every backend through the ``xp`` fixture, inputs that take no gradient, and bad shapes.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nptransformer import ShapeError, Tensor, get_array_module, gradcheck
from nptransformer import functional as F
from nptransformer.backend import to_device

TOLERANCES = {np.float64: 1e-10, np.float32: 1e-5}


def _inputs(rng, lead, n_in, n_out, with_bias, dtype=np.float64, wrap=np.asarray):
    x = Tensor(wrap(rng.standard_normal(lead + (n_in,)).astype(dtype)), requires_grad=True)
    weight = Tensor(wrap(rng.standard_normal((n_out, n_in)).astype(dtype)), requires_grad=True)
    bias = Tensor(wrap(rng.standard_normal(n_out).astype(dtype)), requires_grad=True) if with_bias else None
    return x, weight, bias


# --------------------------------------------------------------------------- 1. gradcheck
@settings(max_examples=15)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple),
    n_in=st.integers(1, 4),
    n_out=st.integers(1, 4),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_linear_gradcheck(lead, n_in, n_out, with_bias, seed):
    x, weight, bias = _inputs(np.random.default_rng(seed), lead, n_in, n_out, with_bias)
    assert gradcheck(F.linear, [x, weight, bias])


# --------------------------------------------------------------------------- 2. composed twin
@pytest.mark.parametrize("lead", [(), (5,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_composed_twin(lead, with_bias, rng):
    fused = _inputs(rng, lead, 4, 3, with_bias)
    composed = [None if t is None else Tensor(t.data, requires_grad=True) for t in fused]
    y = F.linear(*fused)
    x, weight, bias = composed
    y_twin = x @ weight.T if bias is None else x @ weight.T + bias
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    y_twin.backward(dy)
    np.testing.assert_allclose(y.numpy(), y_twin.numpy(), rtol=0, atol=1e-10)
    for ours, twin in zip(fused, composed):
        if ours is not None:
            np.testing.assert_allclose(ours.grad, twin.grad, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- 3. PyTorch parity
@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lead", [(), (6,), (2, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_torch(torch, lead, with_bias, dtype, rng):
    ours = _inputs(rng, lead, 8, 5, with_bias, dtype)
    theirs = [None if t is None else torch.tensor(t.data, requires_grad=True) for t in ours]
    y = F.linear(*ours)
    y_t = torch.nn.functional.linear(*theirs)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)
    y_t.backward(torch.tensor(dy))
    tol = TOLERANCES[dtype]
    assert y.shape == tuple(y_t.shape) and y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), y_t.detach().numpy(), rtol=tol, atol=tol)
    for a, b in zip(ours, theirs):
        if a is not None:
            assert a.grad.dtype == dtype
            np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- every backend
def test_linear_runs_on_every_backend(xp, rng):
    x, weight, bias = _inputs(rng, (2, 3), 4, 5, True, np.float32, xp.asarray)
    y = F.linear(x, weight, bias)
    assert get_array_module(y.data) is xp and y.dtype == np.float32 and y.shape == (2, 3, 5)
    y.backward(xp.asarray(np.ones(y.shape, dtype=np.float32)))
    x_np, w_np, b_np = (to_device(t.data, "cpu") for t in (x, weight, bias))
    np.testing.assert_allclose(y.numpy(), x_np @ w_np.T + b_np, rtol=1e-5, atol=1e-6)
    for t in (x, weight, bias):
        assert get_array_module(t.grad) is xp and t.grad.dtype == np.float32
    # dy of ones: dx sums the weight's rows, dW sums x's rows, db counts the rows (6)
    np.testing.assert_allclose(to_device(x.grad, "cpu"), np.broadcast_to(w_np.sum(0), (2, 3, 4)), rtol=1e-6)
    np.testing.assert_allclose(to_device(weight.grad, "cpu"), np.broadcast_to(x_np.reshape(-1, 4).sum(0), (5, 4)), rtol=1e-5)
    np.testing.assert_allclose(to_device(bias.grad, "cpu"), np.full(5, 6.0))


def test_linear_gradcheck_on_every_backend(xp, rng):
    assert gradcheck(F.linear, list(_inputs(rng, (2, 3), 3, 2, True, np.float64, xp.asarray)))


def test_inputs_that_need_no_gradient_get_none(rng):
    """Data (x) and a frozen weight skip their products; the others still get theirs."""
    x, weight, bias = _inputs(rng, (4,), 3, 2, True)
    x.requires_grad = False
    F.linear(x, weight, bias).backward(np.ones((4, 2)))
    assert x.grad is None
    np.testing.assert_allclose(weight.grad, np.broadcast_to(x.data.sum(0), (2, 3)))
    frozen = Tensor(weight.data)
    x.requires_grad = True
    F.linear(x, frozen).backward(np.ones((4, 2)))
    assert frozen.grad is None
    np.testing.assert_allclose(x.grad, np.broadcast_to(weight.data.sum(0), (4, 3)))


def test_non_contiguous_input_and_gradient(rng):
    """x as a transposed view and a transposed upstream gradient give the same results as copies."""
    x_np = rng.standard_normal((3, 2, 4)).transpose(1, 0, 2)  # (2, 3, 4), not C-contiguous
    w_np = rng.standard_normal((5, 4))
    dy = rng.standard_normal((3, 2, 5)).transpose(1, 0, 2)
    x, weight = Tensor(x_np, requires_grad=True), Tensor(w_np, requires_grad=True)
    F.linear(x, weight).backward(dy)
    np.testing.assert_allclose(x.grad, dy @ w_np, atol=1e-12)
    np.testing.assert_allclose(weight.grad, np.einsum("bto,bti->oi", dy, x_np), atol=1e-12)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, expected",
    [
        ((2, 3), (4, 5), None, r"x's last axis must have weight.shape\[1\] = 5 features, got x of shape \(2, 3\).*weight shape \(4, 5\)"),
        ((2, 5), (5, 4), None, r"weight.shape\[1\] = 4 features.*x shape \(2, 5\), weight shape \(5, 4\)"),
        ((), (4, 5), None, r"got x of shape \(\)"),
        ((2, 5), (5,), None, r"weight must be a matrix of shape \(out_features, in_features\).*weight shape \(5,\)"),
        ((2, 5), (4, 5), (5,), r"bias must have shape \(4,\).*bias shape \(5,\)"),
    ],
)
def test_linear_rejects_bad_shapes_with_one_clear_error(x_shape, w_shape, b_shape, expected):
    bias = None if b_shape is None else Tensor(np.zeros(b_shape))
    with pytest.raises(ShapeError, match=expected) as info:
        F.linear(Tensor(np.zeros(x_shape)), Tensor(np.zeros(w_shape), requires_grad=True), bias)
    message = str(info.value)
    assert message.startswith("linear: ") and str(x_shape) in message and str(w_shape) in message
