"""layer_norm: the fused op checked three ways.

1. gradcheck in float64 over random shapes, with and without weight and bias (hypothesis);
2. a composed twin built from primitive ops agrees within 1e-10 in float64;
3. PyTorch parity, forward and gradients (1e-10 in float64, 1e-5 in float32);
plus every backend through the ``xp`` fixture, constant rows and large offsets, and bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nptransformer import OpError, ShapeError, Tensor, get_array_module, gradcheck
from nptransformer import functional as F
from nptransformer.backend import to_device

TOLERANCES = {np.float64: 1e-10, np.float32: 1e-5}


def _params(rng, channels, affine, dtype=np.float64):
    """weight and bias as leaf Tensors (weight near 1, as after initialization), or None."""
    if not affine:
        return None, None
    weight = Tensor((1 + 0.5 * rng.standard_normal(channels)).astype(dtype), requires_grad=True)
    bias = Tensor((0.5 * rng.standard_normal(channels)).astype(dtype), requires_grad=True)
    return weight, bias


def _layer_norm_twin(x, weight, bias, eps):
    """The same function from primitives: mean, subtract, square, mean, add, sqrt, divide, scale, shift."""
    centered = x - x.mean(axis=-1, keepdims=True)
    var = (centered * centered).mean(axis=-1, keepdims=True)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# --------------------------------------------------------------------------- 1. gradcheck
@settings(max_examples=15)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    channels=st.integers(1, 5),
    with_weight=st.booleans(),
    with_bias=st.booleans(),
    eps=st.sampled_from([1e-5, 0.1]),
    seed=st.integers(0, 2**31),
)
def test_layer_norm_gradcheck(lead, channels, with_weight, with_bias, eps, seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal(lead + (channels,)) * 2 + 1, requires_grad=True)
    weight, bias = _params(rng, channels, True)
    inputs = [x, weight if with_weight else None, bias if with_bias else None]
    assert gradcheck(lambda a, w, b: F.layer_norm(a, w, b, eps=eps), inputs)


# --------------------------------------------------------------------------- 2. composed twin
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_composed_twin(shape, affine, rng):
    x_np = rng.standard_normal(shape) * 3 + 2
    dy = rng.standard_normal(shape)
    fused, composed = Tensor(x_np, requires_grad=True), Tensor(x_np, requires_grad=True)
    weight, bias = _params(rng, shape[-1], affine)
    weight_twin, bias_twin = (None if p is None else Tensor(p.data, requires_grad=True) for p in (weight, bias))
    y = F.layer_norm(fused, weight, bias, eps=1e-5)
    y_twin = _layer_norm_twin(composed, weight_twin, bias_twin, 1e-5)
    y.backward(dy)
    y_twin.backward(dy)
    np.testing.assert_allclose(y.numpy(), y_twin.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.grad, composed.grad, rtol=0, atol=1e-10)
    if affine:
        np.testing.assert_allclose(weight.grad, weight_twin.grad, rtol=0, atol=1e-10)
        np.testing.assert_allclose(bias.grad, bias_twin.grad, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- 3. PyTorch parity
@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6,), (4, 8), (2, 3, 16)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(torch, shape, affine, dtype, rng):
    x_np = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    weight, bias = _params(rng, shape[-1], affine, dtype)
    x = Tensor(x_np, requires_grad=True)
    y = F.layer_norm(x, weight, bias, eps=1e-5)
    y.backward(dy)
    x_t = torch.tensor(x_np, requires_grad=True)
    w_t = torch.tensor(weight.data, requires_grad=True) if affine else None
    b_t = torch.tensor(bias.data, requires_grad=True) if affine else None
    y_t = torch.nn.functional.layer_norm(x_t, (shape[-1],), w_t, b_t, eps=1e-5)
    y_t.backward(torch.tensor(dy))
    tol = TOLERANCES[dtype]
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), y_t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad, x_t.grad.numpy(), rtol=tol, atol=tol)
    if affine:
        np.testing.assert_allclose(weight.grad, w_t.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(bias.grad, b_t.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- every backend
def test_layer_norm_runs_on_every_backend(xp, rng):
    x_np = (rng.standard_normal((2, 3, 8)) * 2 + 5).astype(np.float32)
    w_np, b_np = (rng.standard_normal(8) + 1).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    x = Tensor(xp.asarray(x_np), requires_grad=True)
    weight, bias = Tensor(xp.asarray(w_np), requires_grad=True), Tensor(xp.asarray(b_np), requires_grad=True)
    y = F.layer_norm(x, weight, bias)
    assert get_array_module(y.data) is xp and y.dtype == np.float32
    y.backward(xp.asarray(np.ones(y.shape, dtype=np.float32)))
    for t in (x, weight, bias):
        assert get_array_module(t.grad) is xp and t.grad.dtype == np.float32
    mu, var = x_np.mean(-1, keepdims=True), x_np.var(-1, keepdims=True)
    xhat = (x_np - mu) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y.numpy(), xhat * w_np + b_np, rtol=1e-5, atol=1e-5)
    # an all-ones dy: dβ counts the rows, dγ sums x̂ over them, and dx is exactly the mean and
    # variance paths cancelling the direct one, row by row (g = γ is constant over the rows)
    np.testing.assert_allclose(to_device(bias.grad, "cpu"), np.full(8, 6.0), rtol=1e-6)
    np.testing.assert_allclose(to_device(weight.grad, "cpu"), xhat.reshape(-1, 8).sum(0), rtol=1e-4, atol=1e-5)
    g = w_np
    expected_dx = (g - g.mean() - xhat * (g * xhat).mean(-1, keepdims=True)) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(to_device(x.grad, "cpu"), expected_dx, rtol=1e-4, atol=1e-5)


def test_layer_norm_gradcheck_on_every_backend(xp, rng):
    x = Tensor(xp.asarray(rng.standard_normal((3, 4))), requires_grad=True)
    weight = Tensor(xp.asarray(rng.standard_normal(4)), requires_grad=True)
    bias = Tensor(xp.asarray(rng.standard_normal(4)), requires_grad=True)
    assert gradcheck(lambda a, w, b: F.layer_norm(a, w, b), [x, weight, bias])


# --------------------------------------------------------------------------- the derivation's facts
def test_gradient_has_no_component_along_the_mean_and_variance_directions(rng):
    """Without γ, each row of dx sums to 0 (the mean path removes the component along 1) and,
    as eps -> 0, is orthogonal to x̂ (the variance path removes the component along x̂; with eps
    the mean of x̂² is σ²/(σ² + eps) instead of 1, so the removal is exact only in the limit)."""
    x = Tensor(rng.standard_normal((5, 9)) * 4 - 3, requires_grad=True)
    y = F.layer_norm(x, eps=1e-12)
    y.backward(rng.standard_normal(y.shape))
    np.testing.assert_allclose(x.grad.sum(-1), 0, atol=1e-13)
    np.testing.assert_allclose((x.grad * y.numpy()).sum(-1), 0, atol=1e-12)


def test_backward_twice_with_retained_graph_doubles_the_gradients(rng):
    """The backward must not overwrite what the forward saved (x̂ and 1/σ)."""
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    weight, bias = _params(rng, 4, True)
    y = F.layer_norm(x, weight, bias)
    seed = rng.standard_normal(y.shape)
    y.backward(seed, retain_graph=True)
    first = [t.grad.copy() for t in (x, weight, bias)]
    y.backward(seed)
    for t, g in zip((x, weight, bias), first):
        np.testing.assert_allclose(t.grad, 2 * g, rtol=1e-12)


# --------------------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_rows_give_finite_values_and_gradients(dtype, rng):
    """σ = 0: eps keeps 1/σ finite, x̂ = 0, y = β, and dx is finite (the mean path cancels g)."""
    x_np = np.array([[3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0], [-1e4, -1e4, -1e4, -1e4]], dtype=dtype)
    weight, bias = _params(rng, 4, True, dtype)
    x = Tensor(x_np, requires_grad=True)
    y = F.layer_norm(x, weight, bias)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)
    np.testing.assert_allclose(y.numpy(), np.broadcast_to(bias.data, (3, 4)), rtol=0, atol=1e-6)
    for t in (x, weight, bias):
        assert np.isfinite(t.grad).all()
    g = dy * weight.data
    np.testing.assert_allclose(x.grad, (g - g.mean(-1, keepdims=True)) / np.sqrt(1e-5), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(weight.grad, 0, atol=0)


def test_large_offset_in_float32_is_normalized_accurately(rng):
    """A row of small spread around 1e4: the centered form keeps its x̂ (a one-pass E[x²] - E[x]² would not)."""
    x_np = (1e4 + rng.standard_normal((4, 64))).astype(np.float32)
    y = F.layer_norm(Tensor(x_np))
    x64 = x_np.astype(np.float64)
    expected = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-3)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, error, expected",
    [
        ((2, 4), (5,), (4,), ShapeError, r"weight has shape \(5,\) but x has shape \(2, 4\).*expected weight of shape \(4,\)"),
        ((2, 4), (4,), (1, 4), ShapeError, r"bias has shape \(1, 4\) but x has shape \(2, 4\).*expected bias of shape \(4,\)"),
        ((2, 4), (2, 4), None, ShapeError, r"weight has shape \(2, 4\)"),
        ((), None, None, ShapeError, r"non-empty last axis.*x shape \(\)"),
        ((3, 0), None, None, ShapeError, r"non-empty last axis.*x shape \(3, 0\)"),
    ],
)
def test_layer_norm_rejects_bad_shapes_with_one_clear_error(x_shape, w_shape, b_shape, error, expected):
    weight = None if w_shape is None else Tensor(np.ones(w_shape))
    bias = None if b_shape is None else Tensor(np.zeros(b_shape))
    with pytest.raises(error, match=expected) as info:
        F.layer_norm(Tensor(np.zeros(x_shape), requires_grad=True), weight, bias)
    assert str(info.value).startswith("layer_norm: ") and str(x_shape) in str(info.value)


def test_layer_norm_rejects_integer_input_and_bad_eps():
    with pytest.raises(OpError, match=r"layer_norm: expects floating-point x, got dtype int64"):
        F.layer_norm(Tensor(np.zeros((2, 3), dtype=np.int64)))
    for eps in (0.0, -1e-5):
        with pytest.raises(OpError, match=rf"layer_norm: eps must be a positive number, got {eps}"):
            F.layer_norm(Tensor(np.zeros((2, 3))), eps=eps)
