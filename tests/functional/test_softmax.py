"""softmax, log_softmax and cross_entropy: the fused ops checked three ways.

1. gradcheck in float64 over random shapes, axes, ignore patterns, smoothing values, reductions;
2. a composed twin built from primitive ops agrees within 1e-10 in float64;
3. PyTorch parity, forward and gradients (1e-10 in float64, 1e-5 in float32);
plus every backend through the ``xp`` fixture, stability at logits of +-1e4, and bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nptransformer import OpError, ShapeError, Tensor, gradcheck, get_array_module
from nptransformer import functional as F
from nptransformer.backend import to_device

REDUCTIONS = ("mean", "sum", "none")
IGNORE = -100


def _targets(rng, lead, n_classes, ignore_fraction, ignore_index=IGNORE):
    """Random class indices of shape ``lead``, about ``ignore_fraction`` of them ignored, one always kept."""
    t = rng.integers(0, n_classes, size=lead)
    t[rng.random(lead) < ignore_fraction] = ignore_index
    t.reshape(-1)[:1] = rng.integers(0, n_classes)  # at least one valid target, so "mean" is defined
    return t


def _seed(out, rng):
    """Backward from ``out``: with a random upstream gradient when it is not a scalar."""
    out.backward(None if out.ndim == 0 else rng.standard_normal(out.shape).astype(out.dtype))


# --------------------------------------------------------------------------- composed twins
def _softmax_twin(x, axis):
    e = (x - x.max(axis=axis, keepdims=True)).exp()
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_twin(x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    return z - z.exp().sum(axis=axis, keepdims=True).log()


def _cross_entropy_twin(logits, target, ignore_index, label_smoothing, reduction):
    """The same loss from primitives: log-softmax, integer-array getitem, a mask, a reduction."""
    n_classes = logits.shape[-1]
    logp = _log_softmax_twin(logits, -1).reshape(-1, n_classes)  # (M, V)
    t = target.reshape(-1)
    valid = t != ignore_index
    nll = -logp[(np.arange(t.size), np.where(valid, t, 0))]  # (M,)
    smooth = -logp.sum(axis=1)  # (M,)
    per_position = (nll * (1 - label_smoothing) + smooth * (label_smoothing / n_classes)) * valid.astype(logits.dtype)
    if reduction == "none":
        return per_position.reshape(target.shape)
    if reduction == "sum":
        return per_position.sum()
    return per_position.sum() / int(valid.sum())


# --------------------------------------------------------------------------- 1. gradcheck
@st.composite
def _shape_and_axis(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


@settings(max_examples=15)
@given(_shape_and_axis(), st.sampled_from([F.softmax, F.log_softmax]), st.integers(0, 2**31))
def test_softmax_and_log_softmax_gradcheck(shape_axis, op, seed):
    shape, axis = shape_axis
    x = Tensor(np.random.default_rng(seed).standard_normal(shape) * 3, requires_grad=True)
    assert gradcheck(lambda a: op(a, axis=axis), [x])


@settings(max_examples=20)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    n_classes=st.integers(1, 5),
    ignore_fraction=st.sampled_from([0.0, 0.3, 0.7]),
    label_smoothing=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**31),
)
def test_cross_entropy_gradcheck(lead, n_classes, ignore_fraction, label_smoothing, reduction, seed):
    rng = np.random.default_rng(seed)
    logits = Tensor(rng.standard_normal(lead + (n_classes,)) * 3, requires_grad=True)
    target = _targets(rng, lead, n_classes, ignore_fraction)
    fn = lambda a: F.cross_entropy(a, target, label_smoothing=label_smoothing, reduction=reduction)  # noqa: E731
    assert gradcheck(fn, [logits])


# --------------------------------------------------------------------------- 2. composed twin
@pytest.mark.parametrize("shape, axis", [((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1)])
@pytest.mark.parametrize("op, twin", [(F.softmax, _softmax_twin), (F.log_softmax, _log_softmax_twin)])
def test_softmax_and_log_softmax_match_composed_twin(op, twin, shape, axis, rng):
    x_np = rng.standard_normal(shape) * 3
    dy = rng.standard_normal(shape)
    fused, composed = Tensor(x_np, requires_grad=True), Tensor(x_np, requires_grad=True)
    y, y_twin = op(fused, axis=axis), twin(composed, axis)
    y.backward(dy)
    y_twin.backward(dy)
    np.testing.assert_allclose(y.numpy(), y_twin.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.grad, composed.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lead, label_smoothing, ignore_index", [((6,), 0.0, IGNORE), ((2, 5), 0.2, IGNORE), ((2, 5), 0.1, 0)])
def test_cross_entropy_matches_composed_twin(lead, label_smoothing, ignore_index, reduction, rng):
    n_classes = 7
    x_np = rng.standard_normal(lead + (n_classes,)) * 3
    target = _targets(rng, lead, n_classes, 0.3, ignore_index)
    fused, composed = Tensor(x_np, requires_grad=True), Tensor(x_np, requires_grad=True)
    args = (ignore_index, label_smoothing, reduction)
    loss, loss_twin = F.cross_entropy(fused, target, *args), _cross_entropy_twin(composed, target, *args)
    seed = rng.standard_normal(loss.shape)
    loss.backward(seed)
    loss_twin.backward(seed)
    np.testing.assert_allclose(loss.numpy(), loss_twin.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.grad, composed.grad, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- 3. PyTorch parity
TOLERANCES = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, axis", [((4, 7), -1), ((2, 3, 5), 1), ((2, 3, 5), 0)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax_match_torch(torch, name, shape, axis, dtype, rng):
    x_np = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    ours = Tensor(x_np, requires_grad=True)
    y = getattr(F, name)(ours, axis=axis)
    y.backward(dy)
    theirs = torch.tensor(x_np, requires_grad=True)
    y_torch = getattr(torch.nn.functional, name)(theirs, dim=axis)
    y_torch.backward(torch.tensor(dy))
    tol = TOLERANCES[dtype]
    assert y.dtype == dtype and ours.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), y_torch.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "lead, label_smoothing, ignore_index",
    [((8,), 0.0, IGNORE), ((8,), 0.1, IGNORE), ((2, 4), 0.0, IGNORE), ((2, 4), 0.25, IGNORE), ((2, 4), 0.1, 3)],
)
def test_cross_entropy_matches_torch(torch, lead, label_smoothing, ignore_index, reduction, dtype, rng):
    n_classes = 6
    x_np = (rng.standard_normal(lead + (n_classes,)) * 3).astype(dtype)
    target = _targets(rng, lead, n_classes, 0.3, ignore_index)
    kwargs = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    ours = Tensor(x_np, requires_grad=True)
    loss = F.cross_entropy(ours, Tensor(target), **kwargs)
    theirs = torch.tensor(x_np, requires_grad=True)
    # PyTorch wants the classes on axis 1; flattening the leading axes gives it (M, V).
    loss_torch = torch.nn.functional.cross_entropy(theirs.reshape(-1, n_classes), torch.tensor(target).reshape(-1), **kwargs)
    loss_torch = loss_torch.reshape(loss.shape)
    seed = rng.standard_normal(loss.shape).astype(dtype)
    loss.backward(seed)
    loss_torch.backward(torch.tensor(seed))
    tol = TOLERANCES[dtype]
    assert loss.dtype == dtype and ours.grad.dtype == dtype
    np.testing.assert_allclose(loss.numpy(), loss_torch.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.torch
def test_cross_entropy_matches_torch_on_one_unbatched_position_and_all_ignored_sum(torch, rng):
    x_np = rng.standard_normal(5)
    for target, reduction in [(3, "mean"), (3, "none"), (IGNORE, "sum")]:
        ours = Tensor(x_np, requires_grad=True)
        loss = F.cross_entropy(ours, target, label_smoothing=0.2, reduction=reduction)
        loss.backward()
        theirs = torch.tensor(x_np, requires_grad=True)
        loss_torch = torch.nn.functional.cross_entropy(theirs, torch.tensor(target), label_smoothing=0.2, reduction=reduction)
        loss_torch.backward()
        np.testing.assert_allclose(loss.numpy(), loss_torch.detach().numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- every backend
def _softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_ops_run_on_every_backend(xp, rng):
    x_np = (rng.standard_normal((2, 3, 5)) * 3).astype(np.float32)
    target_np = _targets(rng, (2, 3), 5, 0.3)
    results = {}
    for name, call in [
        ("softmax", lambda a: F.softmax(a, axis=1)),
        ("log_softmax", lambda a: F.log_softmax(a, axis=-1)),
        ("cross_entropy", lambda a: F.cross_entropy(a, xp.asarray(target_np), label_smoothing=0.1, reduction="none")),
    ]:
        x = Tensor(xp.asarray(x_np), requires_grad=True)
        out = call(x)
        assert get_array_module(out.data) is xp and out.dtype == np.float32
        out.backward(xp.asarray(np.ones(out.shape, dtype=np.float32)))
        assert get_array_module(x.grad) is xp and x.grad.dtype == np.float32
        results[name] = out.numpy(), to_device(x.grad, "cpu")
    np.testing.assert_allclose(results["softmax"][0], _softmax_ref(x_np, 1), rtol=1e-6)
    np.testing.assert_allclose(results["log_softmax"][0], np.log(_softmax_ref(x_np, -1)), rtol=1e-5, atol=1e-6)
    # each row of a softmax sums to 1 whatever is upstream, so a gradient of all ones vanishes
    np.testing.assert_allclose(results["softmax"][1], 0, atol=1e-6)
    valid = target_np != IGNORE
    logp = np.log(_softmax_ref(x_np.astype(np.float64), -1))
    picked = np.take_along_axis(logp, np.where(valid, target_np, 0)[..., None], -1)[..., 0]
    expected = np.where(valid, -0.9 * picked - 0.1 / 5 * logp.sum(-1), 0)
    np.testing.assert_allclose(results["cross_entropy"][0], expected, rtol=1e-5, atol=1e-6)
    assert not results["cross_entropy"][1][~valid].any()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck_on_every_backend(xp, reduction, rng):
    logits = Tensor(xp.asarray(rng.standard_normal((3, 4))), requires_grad=True)
    target = xp.asarray(np.array([2, IGNORE, 0]))
    assert gradcheck(lambda a: F.cross_entropy(a, target, label_smoothing=0.3, reduction=reduction), [logits])


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax])
def test_softmax_gradcheck_on_every_backend(xp, op, rng):
    assert gradcheck(lambda a: op(a, axis=0), [Tensor(xp.asarray(rng.standard_normal((3, 4))), requires_grad=True)])


@pytest.mark.parametrize(
    "call",
    [lambda a: F.softmax(a), lambda a: F.log_softmax(a), lambda a: F.cross_entropy(a, [1, IGNORE, 0], label_smoothing=0.1)],
)
def test_backward_twice_with_retained_graph_doubles_the_gradient(call, rng):
    """The backward must not overwrite what the forward saved."""
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    out = call(x)
    seed = np.ones(out.shape)
    out.backward(seed, retain_graph=True)
    first = x.grad.copy()
    out.backward(seed)
    np.testing.assert_allclose(x.grad, 2 * first, rtol=1e-12)


# --------------------------------------------------------------------------- stability
def test_huge_float32_logits_give_finite_values_and_gradients():
    x_np = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 1e4, -1e4]], dtype=np.float32)
    target = np.array([1, 2, IGNORE])
    for op in (F.softmax, F.log_softmax):
        x = Tensor(x_np, requires_grad=True)
        y = op(x)
        y.backward(np.ones(y.shape, dtype=np.float32))
        assert np.isfinite(y.numpy()).all() and np.isfinite(x.grad).all()
    np.testing.assert_allclose(F.log_softmax(Tensor(x_np)).numpy()[0], [0, -2e4, -1e4])

    for label_smoothing in (0.0, 0.1):
        x = Tensor(x_np, requires_grad=True)
        loss = F.cross_entropy(x, target, label_smoothing=label_smoothing)
        loss.backward()
        assert loss.dtype == np.float32 and np.isfinite(loss.item()) and np.isfinite(x.grad).all()
        # row 0: -log p_1 = 2e4; row 1: -log p_2 = log 2; row 2 is ignored; mean over 2 rows
        nll = (2e4 + np.log(2)) / 2
        smooth = (3e4 / 3 + (2e4 + 3 * np.log(2)) / 3) / 2  # -(1/V) sum_c log p_c, averaged
        np.testing.assert_allclose(loss.item(), (1 - label_smoothing) * nll + label_smoothing * smooth, rtol=1e-6)
        y = (1 - label_smoothing) * np.eye(3)[[1, 2]] + label_smoothing / 3
        p = np.array([[1, 0, 0], [0, 0.5, 0.5]])
        np.testing.assert_allclose(x.grad, np.vstack([(p - y) / 2, np.zeros((1, 3))]), atol=1e-7)


# --------------------------------------------------------------------------- bad input
LOGITS = np.zeros((4, 5), dtype=np.float32)


@pytest.mark.parametrize(
    "logits, target, kwargs, expected",
    [
        (LOGITS, np.array([0, 1, 5, 2]), {}, r"out of range, the first is 5.*\[0, 5\)"),
        (LOGITS, np.array([0, -1, 2, 2]), {}, r"out of range, the first is -1"),
        (LOGITS, np.array([0, 1, 2, 3]), {"ignore_index": 3, "reduction": "avg"}, r"unknown reduction 'avg'"),
        (LOGITS, np.array([0.0, 1.0, 2.0, 3.0]), {}, r"dtype float64.*integer class indices"),
        (LOGITS, np.array([0, 1, 2]), {}, r"leading shape.*target of shape \(4,\)"),
        (np.zeros((2, 3, 5)), np.zeros((3, 2), dtype=int), {}, r"leading shape.*target of shape \(2, 3\)"),
        (LOGITS, np.zeros(4, dtype=int), {"label_smoothing": 1.5}, r"label_smoothing=1.5.*\[0, 1\]"),
        (LOGITS, np.zeros(4, dtype=int), {"label_smoothing": -0.1}, r"label_smoothing=-0.1"),
        (np.zeros((4, 5), dtype=int), np.zeros(4, dtype=int), {}, r"dtype int64.*floating-point logits"),
        (np.zeros((4, 0)), np.zeros(4, dtype=int), {}, r"no class axis"),
        (LOGITS, np.full(4, IGNORE), {}, r"every target equals ignore_index=-100.*NaN"),
    ],
)
def test_cross_entropy_rejects_bad_input_with_one_clear_error(logits, target, kwargs, expected):
    with pytest.raises(OpError, match=expected) as info:
        F.cross_entropy(Tensor(logits, requires_grad=logits.dtype.kind == "f"), target, **kwargs)
    message = str(info.value)
    assert message.startswith("cross_entropy: ") and "expected" in message
    assert str(logits.shape) in message and str(target.shape) in message


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax])
def test_softmax_rejects_bad_axis_and_dtype(op):
    name = op.__name__
    with pytest.raises(ShapeError, match=rf"{name}: axis 2 .*shape \(3, 4\).*\[-2, 2\)"):
        op(Tensor(np.zeros((3, 4))), axis=2)
    with pytest.raises(OpError, match=rf"{name}: expects floating-point input, got dtype int64"):
        op(Tensor(np.zeros((3, 4), dtype=np.int64)))
    with pytest.raises(ShapeError, match=rf"{name}: axis -1 of the input of shape \(3, 0\) is empty"):
        op(Tensor(np.zeros((3, 0))))
