"""embedding: the lookup and its scatter-add backward checked three ways.

1. gradcheck in float64 with repeated ids and padding_idx;
2. a composed twin (integer-array getitem from primitives, the padding row detached) agrees
   within 1e-10 in float64, and so does the one-hot matrix product the derivation starts from;
3. PyTorch parity with and without padding_idx (1e-10 in float64, 1e-5 in float32);
plus every backend through the ``xp`` fixture, repeated ids, the kinds of ids accepted, and bad input.
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
V, C = 6, 4


def _table(rng, dtype=np.float64, wrap=np.asarray):
    return Tensor(wrap(rng.standard_normal((V, C)).astype(dtype)), requires_grad=True)


def _ids(rng, shape):
    """Random ids with repeats (V = 6 rows for up to 12 positions), always including 0 and V - 1."""
    ids = rng.integers(0, V, size=shape)
    if ids.size >= 2:
        ids.reshape(-1)[:2] = [0, V - 1]
    return ids


# --------------------------------------------------------------------------- 1. gradcheck
@settings(max_examples=15)
@given(
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple),
    padding_idx=st.sampled_from([None, 0, 3, -1]),
    seed=st.integers(0, 2**31),
)
def test_embedding_gradcheck(shape, padding_idx, seed):
    """The padding row's gradient is 0 by decree, not by calculus, so finite differences would
    disagree wherever it is looked up: here ids avoid it, and the other rows must be unaffected.
    (The twins and PyTorch check the padding row itself.)"""
    rng = np.random.default_rng(seed)
    ids = _ids(rng, shape)
    if padding_idx is not None:
        ids[ids == padding_idx % V] = (padding_idx + 1) % V
    assert gradcheck(lambda w: F.embedding(ids, w, padding_idx=padding_idx), [_table(rng)])


# --------------------------------------------------------------------------- 2. composed twins
def _embedding_twin(ids, weight, padding_idx):
    """weight[ids] through the primitive getitem (whose backward is add.at); where an id is the
    padding row, the same values are read from a detached copy, so no gradient reaches it."""
    rows = weight[ids]
    if padding_idx is None:
        return rows
    return F.where((ids == padding_idx % V)[..., None], weight.detach()[ids], rows)


def _one_hot_twin(ids, weight):
    """The derivation's starting point: onehot(ids) @ weight, a (..., V) @ (V, C) matrix product."""
    return Tensor(np.eye(V)[ids]) @ weight


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 2, 3)])
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_composed_twins(shape, padding_idx, rng):
    ids = _ids(rng, shape)
    fused = _table(rng)
    composed, one_hot = Tensor(fused.data, requires_grad=True), Tensor(fused.data, requires_grad=True)
    y = F.embedding(ids, fused, padding_idx=padding_idx)
    y_twin, y_one_hot = _embedding_twin(ids, composed, padding_idx), _one_hot_twin(ids, one_hot)
    dy = rng.standard_normal(y.shape)
    for out in (y, y_twin, y_one_hot):
        out.backward(dy)
    np.testing.assert_allclose(y.numpy(), y_twin.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(y.numpy(), y_one_hot.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fused.grad, composed.grad, rtol=0, atol=1e-10)
    if padding_idx is not None:
        one_hot.grad[padding_idx] = 0  # the one-hot product knows nothing of padding
    np.testing.assert_allclose(fused.grad, one_hot.grad, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- 3. PyTorch parity
@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(9,), (3, 5)])
@pytest.mark.parametrize("padding_idx", [None, 0, 4, -2])
def test_embedding_matches_torch(torch, shape, padding_idx, dtype, rng):
    ids = _ids(rng, shape)
    ids.reshape(-1)[-1] = 0 if padding_idx is None else padding_idx % V  # the padding row is used
    weight = _table(rng, dtype)
    y = F.embedding(ids, weight, padding_idx=padding_idx)
    weight_t = torch.tensor(weight.data, requires_grad=True)
    y_t = torch.nn.functional.embedding(torch.tensor(ids), weight_t, padding_idx=padding_idx)
    dy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(dy)
    y_t.backward(torch.tensor(dy))
    tol = TOLERANCES[dtype]
    assert y.dtype == dtype and weight.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), y_t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(weight.grad, weight_t.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- every backend
def test_embedding_runs_on_every_backend(xp, rng):
    ids_np = np.array([[1, 3, 1], [5, 1, 0]])
    weight = _table(rng, np.float32, xp.asarray)
    y = F.embedding(xp.asarray(ids_np), weight, padding_idx=0)
    assert get_array_module(y.data) is xp and y.dtype == np.float32 and y.shape == (2, 3, C)
    np.testing.assert_array_equal(y.numpy(), to_device(weight.data, "cpu")[ids_np])
    y.backward(xp.asarray(np.ones(y.shape, dtype=np.float32)))
    assert get_array_module(weight.grad) is xp and weight.grad.dtype == np.float32
    counts = np.array([0, 3, 0, 1, 0, 1], dtype=np.float32)  # id 1 three times; id 0 is padding
    np.testing.assert_array_equal(to_device(weight.grad, "cpu"), np.broadcast_to(counts[:, None], (V, C)))


def test_embedding_gradcheck_on_every_backend(xp, rng):
    ids = xp.asarray(np.array([[2, 2, 5], [0, 2, 0]]))
    assert gradcheck(lambda w: F.embedding(ids, w, padding_idx=1), [_table(rng, np.float64, xp.asarray)])


# --------------------------------------------------------------------------- repeats and kinds of ids
def test_repeated_ids_accumulate_every_contribution():
    weight = Tensor(np.zeros((3, 2)), requires_grad=True)
    dy = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0], [0.5, 0.5]])
    F.embedding([1, 1, 1, 2], weight).backward(dy)
    np.testing.assert_array_equal(weight.grad, [[0, 0], [111, 222], [0.5, 0.5]])


@pytest.mark.parametrize(
    "ids",
    [[[4, 0], [2, 2]], np.array([[4, 0], [2, 2]], dtype=np.int32), np.array([[4, 0], [2, 2]], dtype=np.uint8), Tensor(np.array([[4, 0], [2, 2]]))],
    ids=["list", "int32", "uint8", "Tensor"],
)
def test_ids_may_be_a_list_any_integer_dtype_or_a_tensor(ids, rng):
    weight = _table(rng)
    y = F.embedding(ids, weight)
    np.testing.assert_array_equal(y.numpy(), weight.data[[[4, 0], [2, 2]]])
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(weight.grad[:, 0], [1, 0, 2, 0, 1, 0])


def test_scalar_id_and_empty_ids(rng):
    weight = _table(rng)
    np.testing.assert_array_equal(F.embedding(3, weight).numpy(), weight.data[3])
    empty = F.embedding(np.zeros((2, 0), dtype=np.int64), weight)
    assert empty.shape == (2, 0, C)
    empty.backward(np.zeros((2, 0, C)))
    np.testing.assert_array_equal(weight.grad, 0)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "ids, kwargs, expected",
    [
        (np.array([0, 6, 2]), {}, r"embedding: 1 id\(s\) out of range, the first is 6 .*expected ids in \[0, 6\)"),
        (np.array([[0, -1], [7, -3]]), {}, r"embedding: 3 id\(s\) out of range, the first is -1 .*ids shape \(2, 2\)"),
        (np.array([0.0, 1.5]), {}, r"embedding: ids must be integers in \[0, 6\), got dtype float64, the first is 0.0"),
        (np.array([True, False]), {}, r"embedding: ids must be integers in \[0, 6\), got dtype bool"),
        (np.array([0, 1]), {"padding_idx": 6}, r"embedding: padding_idx=6 is not a row of weight.*\[-6, 6\)"),
        (np.array([0, 1]), {"padding_idx": -7}, r"embedding: padding_idx=-7"),
        (np.array([0, 1]), {"padding_idx": 1.0}, r"embedding: padding_idx=1.0"),
    ],
)
def test_embedding_rejects_bad_ids_with_one_clear_error(ids, kwargs, expected, rng):
    with pytest.raises(OpError, match=expected) as info:
        F.embedding(ids, _table(rng), **kwargs)
    assert f"weight shape ({V}, {C})" in str(info.value)


def test_embedding_rejects_a_table_that_is_not_a_matrix():
    with pytest.raises(ShapeError, match=r"embedding: weight must be a table of shape \(V, C\).*weight shape \(6,\)"):
        F.embedding([0, 1], Tensor(np.zeros(V), requires_grad=True))
