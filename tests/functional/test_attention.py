"""scaled_dot_product_attention: the fused op checked three ways.

1. gradcheck in float64 for q, k, v (and a float mask) over random shapes and mask kinds, T != S;
2. the composed twin (``attention_from_primitives``) agrees within 1e-10 in float64, forward and
   gradients, dropout included;
3. PyTorch parity, forward and gradients (1e-10 in float64, 1e-5 in float32);
plus fully masked rows (zeros, never NaN), dropout reproducibility and mask reuse, every backend
through the ``xp`` fixture, the returned weights, and bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nptransformer import OpError, ShapeError, Tensor, gradcheck, no_grad
from nptransformer import functional as F
from nptransformer.functional.attention import attention_from_primitives

MASK_KINDS = ("none", "random", "padding", "causal", "float")


def _qkv(rng, lead, t, s, d, dv, dtype=np.float64):
    """Random q (lead, T, D), k (lead, S, D), v (lead, S, Dv) arrays."""
    return (
        rng.standard_normal(lead + (t, d)).astype(dtype),
        rng.standard_normal(lead + (s, d)).astype(dtype),
        rng.standard_normal(lead + (s, dv)).astype(dtype),
    )


def _mask_kwargs(kind, rng, lead, t, s, dtype=np.float64):
    """Keyword arguments for one kind of mask over scores of shape lead + (T, S)."""
    if kind == "none":
        return {}
    if kind == "random":  # may leave a query with nothing to attend to: that is part of the test
        return {"mask": rng.random(lead + (t, s)) > 0.35}
    if kind == "padding":  # (B, 1, ..., 1, S): batch b attends to its first lengths[b] keys
        lengths = rng.integers(1, s + 1, size=lead[:1] + (1,) * (len(lead) - 1) + (1, 1))
        return {"mask": np.arange(s) < lengths}
    if kind == "causal":
        return {"is_causal": True}
    return {"mask": rng.standard_normal((t, s)).astype(dtype)}  # float, broadcast over lead


def _tensors(*arrays):
    return [Tensor(a, requires_grad=True) for a in arrays]


def _run(fn, arrays, upstream, **kwargs):
    """Forward and backward of ``fn`` on fresh leaves; returns (output, [grads of q, k, v])."""
    leaves = _tensors(*arrays)
    out = fn(*leaves, **kwargs)
    out.backward(upstream.astype(out.dtype))
    return out.numpy(), [leaf.grad for leaf in leaves]


def _dead_rows(mask, shape):
    """Boolean (..., T) of queries whose every key is masked out."""
    return ~np.broadcast_to(mask, shape).any(axis=-1)


# --------------------------------------------------------------------------- 1. gradcheck
@settings(max_examples=30)
@given(
    b=st.integers(1, 2), h=st.integers(1, 2), t=st.integers(1, 4), s=st.integers(1, 4),
    d=st.integers(1, 3), dv=st.integers(1, 3), kind=st.sampled_from(MASK_KINDS),
    scale=st.sampled_from([None, 0.3]), seed=st.integers(0, 2**16),
)
def test_gradcheck_q_k_v(b, h, t, s, d, dv, kind, scale, seed):
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, (b, h), t, s, d, dv)
    kwargs = _mask_kwargs(kind, rng, (b, h), t, s)
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=scale, **kwargs), _tensors(q, k, v))


@pytest.mark.parametrize("mask_shape", [(3, 5), (2, 1, 3, 5)])
def test_gradcheck_float_mask_is_differentiable(mask_shape, rng):
    q, k, v = _qkv(rng, (2, 2), 3, 5, 4, 3)
    mask = rng.standard_normal(mask_shape)
    mask[..., 0, 1] = -np.inf  # a masked key: its gradient is 0
    assert gradcheck(F.scaled_dot_product_attention, _tensors(q, k, v) + [Tensor(mask, requires_grad=True)])


def test_gradcheck_three_axes_and_no_batch(rng):
    q, k, v = _qkv(rng, (2,), 3, 4, 2, 3)  # (B, T, D)
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), _tensors(q, k, v))
    q, k, v = _qkv(rng, (), 3, 4, 2, 3)  # (T, D)
    assert gradcheck(F.scaled_dot_product_attention, _tensors(q, k, v))


# --------------------------------------------------------------------------- 2. composed twin
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_matches_composed_twin(kind, dropout_p, rng):
    lead, t, s = (2, 3), 5, 7
    q, k, v = _qkv(rng, lead, t, s, 4, 6)
    kwargs = _mask_kwargs(kind, rng, lead, t, s)
    if kind == "random":
        kwargs["mask"][0, 1, 2] = False  # surely one fully masked query
    upstream = rng.standard_normal(lead + (t, 6))
    kwargs["dropout_p"] = dropout_p
    ours, d_ours = _run(F.scaled_dot_product_attention, (q, k, v), upstream, rng=np.random.default_rng(7), **kwargs)
    twin, d_twin = _run(attention_from_primitives, (q, k, v), upstream, rng=np.random.default_rng(7), **kwargs)
    np.testing.assert_allclose(ours, twin, rtol=0, atol=1e-10)
    for a, b in zip(d_ours, d_twin):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_float_mask_gradient_matches_composed_twin(rng):
    q, k, v = _qkv(rng, (2, 2), 4, 3, 3, 2)
    mask = rng.standard_normal((2, 1, 4, 3))
    upstream = rng.standard_normal((2, 2, 4, 2))
    grads = []
    for fn in (F.scaled_dot_product_attention, attention_from_primitives):
        m = Tensor(mask, requires_grad=True)
        fn(*_tensors(q, k, v), mask=m).backward(upstream)
        grads.append(m.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- 3. PyTorch parity
PARITY_CASES = {
    "plain": ((2, 3), 5, 5, {}),
    "bool mask": ((2, 3), 4, 6, {"mask": "bool"}),
    "padding": ((2, 3), 6, 6, {"mask": "padding"}),
    "causal T<S": ((2, 2), 3, 6, {"is_causal": True}),
    "causal T>S": ((2, 2), 6, 3, {"is_causal": True}),
    "float mask": ((2, 3), 4, 5, {"mask": "float"}),
    "scale": ((2, 2), 4, 4, {"scale": 0.7}),
    "three axes": ((3,), 4, 5, {"is_causal": True}),
}


def _parity_mask(name, rng, lead, t, s, dtype):
    if name == "bool":
        mask = rng.random(lead[:1] + (1, t, s)) > 0.4
        mask[..., 0] = True  # no fully masked rows here (they have their own test)
        return mask
    if name == "padding":
        return _mask_kwargs("padding", rng, lead, t, s)["mask"]
    return _mask_kwargs("float", rng, lead, t, s, dtype)["mask"]


def _torch_run(torch, arrays, upstream, mask=None, **kwargs):
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    attn_mask = None if mask is None else torch.tensor(mask)
    out = torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=attn_mask, **kwargs)
    out.backward(torch.tensor(upstream.astype(arrays[0].dtype)))
    return out.detach().numpy(), [leaf.grad.numpy() for leaf in leaves]


@pytest.mark.torch
@pytest.mark.parametrize("case", list(PARITY_CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(torch, case, dtype, rng):
    lead, t, s, kwargs = PARITY_CASES[case]
    kwargs = dict(kwargs)
    if "mask" in kwargs:
        kwargs["mask"] = _parity_mask(kwargs["mask"], rng, lead, t, s, dtype)
    q, k, v = _qkv(rng, lead, t, s, 8, 3, dtype)
    upstream = rng.standard_normal(lead + (t, 3))
    ours, d_ours = _run(F.scaled_dot_product_attention, (q, k, v), upstream, **kwargs)
    theirs, d_theirs = _torch_run(torch, (q, k, v), upstream, **kwargs)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert ours.dtype == dtype and all(g.dtype == dtype for g in d_ours)
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    for a, b in zip(d_ours, d_theirs):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.torch
def test_matches_torch_outside_fully_masked_rows(torch, rng):
    """Where some queries may attend to nothing, compare only the other rows (our dead rows are 0)."""
    lead, t, s = (2, 2), 5, 4
    q, k, v = _qkv(rng, lead, t, s, 3, 2)
    mask = rng.random(lead + (t, s)) > 0.5
    mask[0, 0, 1] = False
    mask[1, 1, 3] = False
    live = ~_dead_rows(mask, lead + (t, s))
    upstream = rng.standard_normal(lead + (t, 2)) * live[..., None]  # no gradient flows from dead rows
    ours, (dq, _, _) = _run(F.scaled_dot_product_attention, (q, k, v), upstream, mask=mask)
    theirs, (dq_torch, _, _) = _torch_run(torch, (q, k, v), upstream, mask=mask)
    np.testing.assert_allclose(ours[live], theirs[live], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dq[live], dq_torch[live], rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- fully masked rows
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_rows_give_zeros_and_zero_gradients(kind, rng):
    lead, t, s = (2, 2), 4, 5
    q, k, v = _qkv(rng, lead, t, s, 3, 2)
    allowed = rng.random(lead + (t, s)) > 0.3
    allowed[..., 0] = True
    allowed[0, 1, 2] = False  # batch 0, head 1, query 2 may attend to nothing
    mask = allowed if kind == "bool" else np.where(allowed, 0.0, -np.inf)
    leaves = _tensors(q, k, v)
    out, weights = F.scaled_dot_product_attention(*leaves, mask=mask, return_weights=True)
    out.backward(rng.standard_normal(out.shape))
    assert np.all(out.numpy()[0, 1, 2] == 0) and np.all(weights.numpy()[0, 1, 2] == 0)
    assert all(np.all(np.isfinite(leaf.grad)) for leaf in leaves)
    assert np.all(leaves[0].grad[0, 1, 2] == 0)
    # The other rows are exactly attention without the dead query.
    keep = np.ones(t, dtype=bool)
    keep[2] = False
    alone = F.scaled_dot_product_attention(Tensor(q[0, 1, keep]), Tensor(k[0, 1]), Tensor(v[0, 1]), mask=mask[0, 1, keep])
    np.testing.assert_allclose(out.numpy()[0, 1, keep], alone.numpy(), rtol=0, atol=1e-12)


def test_huge_scores_stay_finite():
    q = Tensor(np.full((1, 1, 2, 4), 1e4, dtype=np.float32), requires_grad=True)
    k = Tensor(np.full((1, 1, 3, 4), 1e4, dtype=np.float32), requires_grad=True)
    v = Tensor(np.ones((1, 1, 3, 2), dtype=np.float32), requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out.sum().backward()
    np.testing.assert_allclose(out.numpy(), 1.0)
    assert all(np.all(np.isfinite(t.grad)) for t in (q, k, v))


# --------------------------------------------------------------------------- dropout
def test_dropout_is_reproducible_and_off_outside_training(rng):
    q, k, v = _qkv(rng, (2, 2), 6, 6, 4, 3)

    def run(seed, **kwargs):
        rng = np.random.default_rng(seed)
        return F.scaled_dot_product_attention(*_tensors(q, k, v), dropout_p=0.4, rng=rng, **kwargs).numpy()

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.allclose(run(3), run(4))
    # The fused dropout is F.dropout on the weights: one seed, one keep-mask.
    weights = F.scaled_dot_product_attention(*_tensors(q, k, v), return_weights=True)[1]
    dropped = F.dropout(weights, 0.4, rng=np.random.default_rng(3))
    np.testing.assert_allclose(run(3), (dropped @ Tensor(v)).numpy(), rtol=0, atol=1e-12)
    plain = F.scaled_dot_product_attention(*_tensors(q, k, v)).numpy()
    np.testing.assert_array_equal(run(3, training=False), plain)
    np.testing.assert_array_equal(
        F.scaled_dot_product_attention(*_tensors(q, k, v), dropout_p=0.0, rng=np.random.default_rng(3)).numpy(), plain
    )


def test_dropout_mask_is_reused_in_backward(rng):
    """With v = I the output IS the dropped weights, so the forward's mask can be read off it."""
    p_drop, t, s = 0.25, 32, 32
    q, k, _ = _qkv(rng, (4, 4), t, s, 8, s)
    leaves = _tensors(q, k, np.broadcast_to(np.eye(s), (4, 4, s, s)).copy())
    out, weights = F.scaled_dot_product_attention(*leaves, dropout_p=p_drop, rng=np.random.default_rng(0), return_weights=True)
    upstream = rng.standard_normal(out.shape)
    out.backward(upstream)
    dropped, p = out.numpy(), weights.numpy()
    keep = dropped != 0
    assert abs((~keep).mean() - p_drop) < 0.02  # about a quarter of the weights are dropped
    np.testing.assert_allclose(dropped, p * keep / (1 - p_drop), rtol=0, atol=1e-12)  # inverted scaling
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)  # the returned weights are before dropout
    # Backward by hand with that same mask: dV = P_dropᵀ dO, dP = dO Vᵀ ⊙ keep / (1 - p), dZ, dQ.
    np.testing.assert_allclose(leaves[2].grad, dropped.swapaxes(-1, -2) @ upstream, rtol=0, atol=1e-10)
    dp = upstream * keep / (1 - p_drop)  # V = I, so dO Vᵀ = dO
    dz = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(leaves[0].grad, dz @ k / np.sqrt(8), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- weights, dtypes, no_grad
def test_return_weights_are_detached_probabilities(rng):
    q, k, v = _qkv(rng, (2, 3), 4, 5, 6, 2, np.float32)
    out, weights = F.scaled_dot_product_attention(*_tensors(q, k, v), is_causal=True, return_weights=True)
    assert weights.shape == (2, 3, 4, 5) and not weights.requires_grad and weights.dtype == np.float32
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(6) + np.where(np.tri(4, 5, dtype=bool), 0, -np.inf)
    expected = np.exp(scores - scores.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(weights.numpy(), expected / expected.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), weights.numpy() @ v, rtol=1e-5, atol=1e-6)


def test_float32_stays_float32_and_no_grad_records_nothing(rng):
    q, k, v = _qkv(rng, (2, 2), 3, 4, 5, 6, np.float32)
    leaves = _tensors(q, k, v)
    out = F.scaled_dot_product_attention(*leaves, mask=np.ones((3, 4), dtype=np.float32), dropout_p=0.1, rng=rng)
    out.sum().backward()
    assert out.dtype == np.float32 and all(leaf.grad.dtype == np.float32 for leaf in leaves)
    with no_grad():
        assert not F.scaled_dot_product_attention(*leaves).requires_grad


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"is_causal": True}, {"mask": "bool"}, {"mask": "float"}, {"dropout_p": 0.3}],
    ids=["plain", "causal", "bool", "float", "dropout"],
)
def test_runs_on_every_backend(xp, kwargs, rng):
    lead, t, s = (2, 2), 3, 4
    q, k, v = _qkv(rng, lead, t, s, 5, 2, np.float32)
    kwargs = dict(kwargs)
    if kwargs.get("mask") == "bool":
        kwargs["mask"] = _mask_kwargs("random", rng, lead, t, s)["mask"]
    elif kwargs.get("mask") == "float":
        kwargs["mask"] = _mask_kwargs("float", rng, lead, t, s, np.float32)["mask"]
    upstream = rng.standard_normal(lead + (t, 2)).astype(np.float32)
    results = []
    for module in (np, xp):
        leaves = [Tensor(module.asarray(a), requires_grad=True) for a in (q, k, v)]
        args = {n: module.asarray(a) if isinstance(a, np.ndarray) else a for n, a in kwargs.items()}
        out = F.scaled_dot_product_attention(*leaves, rng=np.random.default_rng(1), **args)
        out.backward(module.asarray(upstream))
        results.append([out.numpy()] + [Tensor(leaf.grad).numpy() for leaf in leaves])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- bad input
BAD_INPUTS = [
    ("batch", ((2, 2, 3, 4), (3, 2, 5, 4), (3, 2, 5, 4)), {}, ShapeError, "leading"),
    ("heads", ((2, 2, 3, 4), (2, 1, 5, 4), (2, 1, 5, 4)), {}, ShapeError, "leading"),
    ("feature", ((2, 2, 3, 4), (2, 2, 5, 3), (2, 2, 5, 4)), {}, ShapeError, "feature size D"),
    ("keys", ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 6, 4)), {}, ShapeError, "number of keys S"),
    ("ndim", ((2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4)), {}, ShapeError, "at least 2 axes"),
    ("mask shape", ((2, 2, 3, 4),) * 3, {"mask": np.ones((4, 3), dtype=bool)}, ShapeError, "does not broadcast"),
    ("mask dtype", ((2, 2, 3, 4),) * 3, {"mask": np.ones((3, 3), dtype=np.int64)}, OpError, "boolean"),
    ("mask and causal", ((2, 2, 3, 4),) * 3, {"mask": np.ones((3, 3), dtype=bool), "is_causal": True}, OpError, "is_causal"),
    ("dropout 1", ((2, 2, 3, 4),) * 3, {"dropout_p": 1.0}, OpError, "[0, 1)"),
    ("dropout negative", ((2, 2, 3, 4),) * 3, {"dropout_p": -0.1}, OpError, "[0, 1)"),
    ("rng", ((2, 2, 3, 4),) * 3, {"dropout_p": 0.1, "rng": 0}, OpError, "Generator"),
]


@pytest.mark.parametrize("name, shapes, kwargs, error, words", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_one_clear_error(name, shapes, kwargs, error, words):
    q, k, v = (Tensor(np.zeros(shape, dtype=np.float32)) for shape in shapes)
    with pytest.raises(error) as info:
        F.scaled_dot_product_attention(q, k, v, **kwargs)
    message = str(info.value)
    assert message.startswith("scaled_dot_product_attention:") and words in message
    if error is ShapeError:
        assert str(shapes[0]) in message or str(kwargs.get("mask", np.zeros(0)).shape) in message


def test_mixed_dtypes_are_refused():
    q = Tensor(np.zeros((2, 3, 4), dtype=np.float32))
    k = Tensor(np.zeros((2, 3, 4), dtype=np.float64))
    with pytest.raises(OpError, match="one floating-point dtype"):
        F.scaled_dot_product_attention(q, k, k)
