"""Every primitive op: gradcheck on random shapes and broadcasts, PyTorch parity, every backend."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nptransformer as nt
import nptransformer.functional as F

SHAPES = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast together: the second drops leading axes and sets some to 1."""
    a = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    drop = draw(st.integers(0, len(a)))
    b = tuple(1 if draw(st.booleans()) else n for n in a[drop:])
    return (a, b) if draw(st.booleans()) else (b, a)


def _arr(rng, shape, low=None):
    x = np.asarray(rng.standard_normal(shape))
    if low is not None:  # keep away from a kink or a singularity (0 for log, sqrt, abs, relu)
        x = np.sign(x) * (np.abs(x) + low)
    return np.asarray(x)  # ufuncs turn 0-d arrays into scalars; keep arrays


def _leaf(x):
    return nt.Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)


# ---- one table: name -> (our function, torch function, input builder(rng, data)) -----------------
def _unary(our, theirs, low=None, positive=False):
    def build(rng, data):
        shape = data.draw(SHAPES)
        x = _arr(rng, shape, low)
        return [np.asarray(np.abs(x) + 0.5) if positive else x]

    return our, theirs, build


def _binary(our, theirs, positive_b=False):
    def build(rng, data):
        sa, sb = data.draw(broadcast_pair())
        b = _arr(rng, sb, 0.3)
        return [_arr(rng, sa), np.asarray(np.abs(b) + 0.5) if positive_b else b]

    return our, theirs, build


def _reduction(name, torch_name, ddof=False):
    def build(rng, data):
        shape = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
        axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
        keepdims = data.draw(st.booleans())
        if ddof and axis is None and np.prod(shape) < 2 or ddof and axis is not None and shape[axis] < 2:
            shape = tuple(n + 1 for n in shape)
        return [_arr(rng, shape), axis, keepdims]

    def ours(x, axis, keepdims):
        return getattr(x, name)(axis=axis, keepdims=keepdims)

    def theirs(torch, x, axis, keepdims):
        dim = tuple(range(x.ndim)) if axis is None else axis
        if torch_name == "var":
            return torch.var(x, dim=dim, keepdim=keepdims, correction=0)
        return getattr(torch, torch_name)(x, dim=dim, keepdim=keepdims)

    return ours, theirs, build


def _matmul_build(rng, data):
    n, k, m = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))
    kind = data.draw(st.sampled_from(["2d", "batched", "broadcast", "vec_left", "vec_right", "vec_vec", "3d_2d"]))
    shapes = {
        "2d": ((n, k), (k, m)),
        "batched": ((2, n, k), (2, k, m)),
        "broadcast": ((2, 1, n, k), (3, k, m)),
        "vec_left": ((k,), (2, k, m)),
        "vec_right": ((2, n, k), (k,)),
        "vec_vec": ((k,), (k,)),
        "3d_2d": ((2, n, k), (k, m)),
    }[kind]
    return [_arr(rng, shapes[0]), _arr(rng, shapes[1])]


def _getitem_build(rng, data):
    x = _arr(rng, (4, 3, 2))
    index = data.draw(st.sampled_from([
        (slice(1, 3),), (0,), (slice(None), 1), (None, slice(None, None, 2)), (Ellipsis, 1),
        (np.array([0, 2, 2, 3]),), (np.array([1, 1]), slice(None), np.array([0, 1])), (-1, None, 0),
    ]))
    return [x, index]


def _shape_build(make_args):
    def build(rng, data):
        shape = data.draw(st.lists(st.integers(1, 3), min_size=2, max_size=3).map(tuple))
        return [_arr(rng, shape), *make_args(shape, data)]

    return build


OPS = {
    "add": _binary(lambda a, b: a + b, lambda t, a, b: a + b),
    "sub": _binary(lambda a, b: a - b, lambda t, a, b: a - b),
    "mul": _binary(lambda a, b: a * b, lambda t, a, b: a * b),
    "div": _binary(lambda a, b: a / b, lambda t, a, b: a / b),
    "pow_tensor": _binary(lambda a, b: b**a, lambda t, a, b: b**a, positive_b=True),
    "pow_scalar": _unary(lambda x: x**3.0, lambda t, x: x**3.0),
    "rpow_scalar": _unary(lambda x: 2.0**x, lambda t, x: 2.0**x),
    "maximum": _binary(F.maximum, lambda t, a, b: t.maximum(a, b)),
    "minimum": _binary(F.minimum, lambda t, a, b: t.minimum(a, b)),
    "neg": _unary(lambda x: -x, lambda t, x: -x),
    "exp": _unary(F.exp, lambda t, x: t.exp(x)),
    "log": _unary(F.log, lambda t, x: t.log(x), positive=True),
    "sqrt": _unary(F.sqrt, lambda t, x: t.sqrt(x), positive=True),
    "tanh": _unary(F.tanh, lambda t, x: t.tanh(x)),
    "sigmoid": _unary(F.sigmoid, lambda t, x: t.sigmoid(x)),
    "relu": _unary(F.relu, lambda t, x: t.relu(x), low=0.05),
    "abs": _unary(F.abs, lambda t, x: t.abs(x), low=0.05),
    "sum": _reduction("sum", "sum"),
    "mean": _reduction("mean", "mean"),
    "max": _reduction("max", "amax"),
    "min": _reduction("min", "amin"),
    "var": _reduction("var", "var", ddof=True),
    "matmul": (lambda a, b: a @ b, lambda t, a, b: a @ b, _matmul_build),
    "getitem": (lambda x, i: x[i], lambda t, x, i: x[tuple(t.as_tensor(p) if isinstance(p, np.ndarray) else p for p in i)], _getitem_build),
    "reshape": (lambda x: x.reshape(-1), lambda t, x: x.reshape(-1), _shape_build(lambda s, d: [])),
    "transpose": (
        lambda x, p: x.transpose(*p), lambda t, x, p: x.permute(*p),
        _shape_build(lambda s, d: [tuple(d.draw(st.permutations(range(len(s)))))]),
    ),
    "swapaxes": (lambda x: x.swapaxes(0, -1), lambda t, x: x.swapaxes(0, -1), _shape_build(lambda s, d: [])),
    "broadcast_to": (lambda x: x.broadcast_to((2, *x.shape)), lambda t, x: x.expand(2, *x.shape), _shape_build(lambda s, d: [])),
    "squeeze_unsqueeze": (lambda x: x.unsqueeze(1).unsqueeze(0).squeeze(2), lambda t, x: x.unsqueeze(1).unsqueeze(0).squeeze(2), _shape_build(lambda s, d: [])),
    "concatenate": (
        lambda a, b: nt.concatenate([a, b, a], axis=1), lambda t, a, b: t.cat([a, b, a], dim=1),
        lambda rng, d: [_arr(rng, (2, 3, 2)), _arr(rng, (2, 1, 2))],
    ),
    "stack": (lambda a, b: nt.stack([a, b], axis=-1), lambda t, a, b: t.stack([a, b], dim=-1), lambda rng, d: [_arr(rng, (2, 3)), _arr(rng, (2, 3))]),
    "split": (
        lambda x: nt.split(x, [1, 3], axis=1)[1] * nt.split(x, 2, axis=0)[0][:, :2],
        lambda t, x: t.tensor_split(x, [1, 3], dim=1)[1] * t.chunk(x, 2, dim=0)[0][:, :2],
        lambda rng, d: [_arr(rng, (2, 4))],
    ),
    "where": (
        lambda a, b, c: nt.where(c, a, b), lambda t, a, b, c: t.where(t.as_tensor(c), a, b),
        lambda rng, d: [_arr(rng, (3, 4)), _arr(rng, (4,)), rng.random((3, 4)) > 0.5],
    ),
    "masked_fill": (
        lambda a, m: a.masked_fill(m, -2.0), lambda t, a, m: a.masked_fill(t.as_tensor(m), -2.0),
        lambda rng, d: [_arr(rng, (3, 4)), rng.random((1, 4)) > 0.5],
    ),
}


def _inputs(args):
    """Float arrays become differentiable float64 leaves; other arguments pass through."""
    return [_leaf(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=8)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_gradcheck(name, data, seed):
    our, _, build = OPS[name]
    args = build(np.random.default_rng(seed), data)
    assert nt.gradcheck(our, _inputs(args))


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=4)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_matches_pytorch(torch, name, data, seed):
    our, theirs, build = OPS[name]
    args = build(np.random.default_rng(seed), data)
    ours_in = _inputs(args)
    theirs_in = [torch.tensor(a, requires_grad=True) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    out = our(*ours_in)
    ref = theirs(torch, *theirs_in)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    upstream = np.random.default_rng(seed + 1).standard_normal(out.shape)
    out.backward(upstream)
    ref.backward(torch.tensor(upstream))
    for mine, theirs_t in zip(ours_in, theirs_in):
        if isinstance(mine, nt.Tensor):
            np.testing.assert_allclose(mine.grad, theirs_t.grad.numpy(), rtol=1e-10, atol=1e-12)


def _move(a, xp):
    if isinstance(a, nt.Tensor):
        return nt.Tensor(xp.asarray(a.data), requires_grad=a.requires_grad)
    if isinstance(a, np.ndarray):
        return xp.asarray(a)
    if isinstance(a, tuple):
        return tuple(_move(v, xp) for v in a)
    return a


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=2, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_runs_on_every_backend(xp, name, data):
    """Forward and backward on each array module equal NumPy's (strict catches any mixing)."""
    our, _, build = OPS[name]
    ref = _inputs(build(np.random.default_rng(1), data))
    ref_out = our(*ref)
    ref_out.backward(np.ones(ref_out.shape))
    moved = [_move(a, xp) for a in ref]
    out = our(*moved)
    assert nt.get_array_module(out.data) is xp
    out.backward(xp.ones(out.shape, dtype=out.dtype))
    np.testing.assert_allclose(out.numpy(), ref_out.data, rtol=1e-12)
    for r, m in zip(ref, moved):
        if isinstance(r, nt.Tensor):
            assert nt.get_array_module(m.grad) is xp
            np.testing.assert_allclose(nt.Tensor(m.grad).numpy(), r.grad, rtol=1e-12)
