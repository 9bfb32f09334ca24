"""Primitive ops: arithmetic, elementwise functions, reductions, shapes and indexing.

Each op is one ``Function`` with its forward and backward side by side, on raw arrays. Every
backward returns the gradient in the shape the forward's output broadcast to; the engine
(``autograd._unbroadcast``) sums it back to each input's shape, so no op here undoes
broadcasting itself. Constants are always built with the inputs' own array module (``xp``).
"""
from __future__ import annotations

import numpy

from ..autograd import Function, OpError, ShapeError, Tensor, _is_float
from ..backend import get_array_module, to_device


# --------------------------------------------------------------------------- helpers
def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _lift(value, like):
    """A Python number or array as an array of ``like``'s module; numbers take its dtype.

    This is what keeps ``float32_tensor * 0.5`` in float32.
    """
    if isinstance(value, Tensor):
        return value
    like_data = _data(like)
    xp = get_array_module(like_data)
    if isinstance(value, (bool, int, float)):
        dtype = like_data.dtype if _is_float(like_data.dtype) else None
        return xp.asarray(value, dtype=dtype)
    return xp.asarray(value) if not hasattr(value, "shape") else value


def _binary(fn, a, b):
    if not isinstance(a, Tensor):
        a = _lift(a, b)
    elif not isinstance(b, Tensor):
        b = _lift(b, a)
    return fn.apply(a, b)


def _expand_reduced(dout, shape, axis, keepdims):
    """Give a reduced gradient back the reduced axes (as size 1) so it broadcasts over ``shape``."""
    if keepdims or dout.ndim == len(shape):
        return dout
    if axis is None:
        return dout.reshape((1,) * len(shape))
    axes = (axis,) if isinstance(axis, int) else axis
    axes = sorted(a % len(shape) for a in axes)
    xp = get_array_module(dout)
    return xp.expand_dims(dout, tuple(axes))


def _reduced_count(shape, axis):
    if axis is None:
        return int(numpy.prod(shape, dtype=numpy.int64))
    axes = (axis,) if isinstance(axis, int) else axis
    return int(numpy.prod([shape[a] for a in axes], dtype=numpy.int64))


# --------------------------------------------------------------------------- arithmetic
class Add(Function):
    """out = a + b;  da = dout, db = dout"""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, dout):
        return dout, dout


class Sub(Function):
    """out = a - b;  da = dout, db = -dout"""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, dout):
        return dout, (-dout if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """out = a * b;  da = dout * b, db = dout * a"""

    name = "mul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        da = dout * b if ctx.needs_input_grad[0] else None
        db = dout * a if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """out = a / b;  da = dout / b, db = -dout * a / b**2 = -dout * out / b"""

    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        ctx.save_for_backward(b, out)
        return out

    @staticmethod
    def backward(ctx, dout):
        b, out = ctx.saved
        da = dout / b if ctx.needs_input_grad[0] else None
        db = -dout * out / b if ctx.needs_input_grad[1] else None
        return da, db


class Pow(Function):
    """out = a ** b;  da = dout * b * a**(b-1), db = dout * out * log(a)

    As in PyTorch, the exponent's gradient is taken as 0 where a == 0 and b >= 0.
    """

    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, dout):
        a, b, out = ctx.saved
        xp = get_array_module(a, b)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = dout * b * a ** (b - 1)
            da = xp.where(b == 0, xp.zeros_like(da), da)
        if ctx.needs_input_grad[1]:
            safe_log = xp.log(xp.where(a == 0, xp.ones_like(a), a))
            db = dout * out * safe_log
        return da, db


class Neg(Function):
    """out = -x;  dx = -dout"""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, dout):
        return -dout


class MatMul(Function):
    """out = a @ b, batched, with broadcast batch axes and 1-D operands as in NumPy.

    With a: (..., n, k) and b: (..., k, m):  da = dout @ bᵀ,  db = aᵀ @ dout
    (ᵀ swaps the last two axes). A 1-D a is treated as (1, k) and a 1-D b as (k, 1), and the
    added axis is removed again from the gradient.
    """

    name = "matmul"

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: both operands need at least one axis, got shapes {a.shape} and {b.shape}")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ShapeError(
                f"matmul: shapes {a.shape} and {b.shape} are not aligned: the first operand's last "
                f"axis has size {k_a} but the second operand's "
                f"{'only' if b.ndim == 1 else 'second-to-last'} axis has size {k_b} "
                "(for A @ B, A is (..., n, k) and B is (..., k, m))"
            )
        try:
            numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ShapeError(
                f"matmul: batch axes of shapes {a.shape} and {b.shape} do not broadcast: "
                f"{a.shape[:-2]} vs {b.shape[:-2]}"
            ) from None
        ctx.save_for_backward(a, b)
        if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:
            # (B, T, k) @ (k, m) as one (B*T, k) @ (k, m) product: one BLAS call, not B.
            return (a.reshape(-1, k_a) @ b).reshape(a.shape[:-1] + (b.shape[1],))
        return a @ b

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        a2 = a[None, :] if a.ndim == 1 else a  # (k,) -> (1, k)
        b2 = b[:, None] if b.ndim == 1 else b  # (k,) -> (k, 1)
        batch = numpy.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        d2 = dout.reshape(batch + (a2.shape[-2], b2.shape[-1]))  # dout with the 1-D axes put back
        da = db = None
        if ctx.needs_input_grad[0]:
            if b2.ndim == 2 and d2.ndim > 2:
                da = (d2.reshape(-1, d2.shape[-1]) @ b2.T).reshape(d2.shape[:-1] + (b2.shape[0],))
            else:
                da = d2 @ b2.swapaxes(-1, -2)
            if a.ndim == 1:
                da = da[..., 0, :]
        if ctx.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # dW for x (..., k) @ W (k, m): sum over every row at once, one BLAS call.
                db = a2.reshape(-1, a2.shape[-1]).T @ d2.reshape(-1, d2.shape[-1])
            else:
                db = a2.swapaxes(-1, -2) @ d2
            if b.ndim == 1:
                db = db[..., :, 0]
        return da, db


# --------------------------------------------------------------------------- elementwise
class Exp(Function):
    """out = exp(x);  dx = dout * out"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        out = xp.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dout):
        (out,) = ctx.saved
        return dout * out


class Log(Function):
    """out = log(x);  dx = dout / x"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        ctx.save_for_backward(x)
        return xp.log(x)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        return dout / x


class Sqrt(Function):
    """out = sqrt(x);  dx = dout / (2 out)"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        out = xp.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dout):
        (out,) = ctx.saved
        return dout / (2 * out)


class Tanh(Function):
    """out = tanh(x);  dx = dout * (1 - out**2)"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        out = xp.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dout):
        (out,) = ctx.saved
        return dout * (1 - out * out)


class Sigmoid(Function):
    """out = 1 / (1 + exp(-x));  dx = dout * out * (1 - out)"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        out = 0.5 * (xp.tanh(0.5 * x) + 1)  # the same function, without overflow in exp(-x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dout):
        (out,) = ctx.saved
        return dout * out * (1 - out)


class Relu(Function):
    """out = max(x, 0);  dx = dout where x > 0, else 0"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        out = xp.maximum(x, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dout):
        (out,) = ctx.saved
        return dout * (out > 0)


class Abs(Function):
    """out = |x|;  dx = dout * sign(x)  (0 at x = 0, as in PyTorch)"""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        ctx.save_for_backward(x)
        return xp.abs(x)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        xp = get_array_module(x)
        return dout * xp.sign(x)


class Maximum(Function):
    """out = max(a, b) elementwise; the gradient goes to the larger, split in half on ties."""

    @staticmethod
    def forward(ctx, a, b):
        xp = get_array_module(a, b)
        ctx.save_for_backward(a, b)
        return xp.maximum(a, b)

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        share_a = (a > b) + (a == b) * dout.dtype.type(0.5)
        return dout * share_a, dout * (1 - share_a)


class Minimum(Function):
    """out = min(a, b) elementwise; the gradient goes to the smaller, split in half on ties."""

    @staticmethod
    def forward(ctx, a, b):
        xp = get_array_module(a, b)
        ctx.save_for_backward(a, b)
        return xp.minimum(a, b)

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved
        share_a = (a < b) + (a == b) * dout.dtype.type(0.5)
        return dout * share_a, dout * (1 - share_a)


class Cast(Function):
    """out = x as ``dtype``;  dx = dout cast back to x's dtype"""

    name = "astype"

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, dout):
        return dout.astype(ctx.dtype), None


class ToDevice(Function):
    """out = x copied to ``device``;  dx = dout copied back"""

    name = "to"

    @staticmethod
    def forward(ctx, x, device):
        from ..backend import device_of

        ctx.device = device_of(x)
        return to_device(x, device)

    @staticmethod
    def backward(ctx, dout):
        return to_device(dout, ctx.device)


# --------------------------------------------------------------------------- reductions
class Sum(Function):
    """out = sum(x, axis);  dx = dout broadcast back over the summed axes"""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, dout):
        xp = get_array_module(dout)
        return xp.broadcast_to(_expand_reduced(dout, ctx.shape, ctx.axis, ctx.keepdims), ctx.shape)


class Mean(Function):
    """out = sum(x, axis) / N;  dx = dout / N broadcast back (N = number of summed elements)"""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return x.mean(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, dout):
        xp = get_array_module(dout)
        n = _reduced_count(ctx.shape, ctx.axis)
        return xp.broadcast_to(_expand_reduced(dout, ctx.shape, ctx.axis, ctx.keepdims) / n, ctx.shape)


class Max(Function):
    """out = max(x, axis);  dx = dout at the maxima, shared evenly between ties, 0 elsewhere"""

    reduce = "max"

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        if x.size == 0:
            raise OpError(f"{cls.reduce}: cannot reduce an empty array of shape {x.shape}")
        out = getattr(x, cls.reduce)(axis=axis, keepdims=True)
        ctx.save_for_backward(x, out)
        ctx.axis = axis
        if keepdims:
            return out
        return out.reshape(()) if axis is None else out.squeeze(axis=axis)

    @staticmethod
    def backward(ctx, dout):
        x, out = ctx.saved
        hit = x == out
        dout = dout.reshape(out.shape)
        return dout * hit / hit.sum(axis=ctx.axis, keepdims=True).astype(dout.dtype)


class Min(Max):
    """out = min(x, axis);  dx = dout at the minima, shared evenly between ties, 0 elsewhere"""

    reduce = "min"


class Var(Function):
    """out = mean((x - mean(x))**2, axis) · N / (N - ddof);  dx = dout · 2 (x - mean(x)) / (N - ddof)"""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False, ddof=0):
        centered = x - x.mean(axis=axis, keepdims=True)
        n = _reduced_count(x.shape, axis)
        ctx.save_for_backward(centered)
        ctx.axis, ctx.keepdims, ctx.denom = axis, keepdims, n - ddof
        return (centered * centered).sum(axis=axis, keepdims=keepdims) / ctx.denom

    @staticmethod
    def backward(ctx, dout):
        (centered,) = ctx.saved
        dout = _expand_reduced(dout, centered.shape, ctx.axis, ctx.keepdims)
        return dout * (2.0 / ctx.denom) * centered


# --------------------------------------------------------------------------- shapes
class Reshape(Function):
    """out = x reshaped;  dx = dout reshaped back"""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, dout):
        return dout.reshape(ctx.shape)


class Transpose(Function):
    """out = x with axes permuted by ``axes``;  dx = dout permuted by the inverse permutation"""

    @staticmethod
    def forward(ctx, x, axes):
        try:
            out = x.transpose(axes)  # axes None reverses them
        except ValueError:  # NumPy's AxisError is a ValueError too
            raise ShapeError(f"transpose: axes {tuple(axes)} are not a permutation of the {x.ndim} axes of shape {x.shape}") from None
        ctx.axes = axes
        return out

    @staticmethod
    def backward(ctx, dout):
        ndim = dout.ndim
        if ctx.axes is None:
            return dout.transpose()  # reversing the axes is its own inverse
        axes = [a % ndim for a in ctx.axes]
        return dout.transpose(sorted(range(ndim), key=axes.__getitem__))  # the inverse permutation (argsort)


class BroadcastTo(Function):
    """out = x broadcast to ``shape``;  dx = dout summed back (done by the engine)"""

    name = "broadcast_to"

    @staticmethod
    def forward(ctx, x, shape):
        xp = get_array_module(x)
        return xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, dout):
        return dout


def _is_advanced(index) -> bool:
    """True when an index can pick the same element twice (integer arrays or lists)."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if isinstance(p, list) or (hasattr(p, "dtype") and p.dtype.kind in "iu"):
            return True
    return False


class GetItem(Function):
    """out = x[index];  dx = zeros, with dout scatter-added at index (repeats accumulate)"""

    name = "getitem"

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        try:
            return x[index]
        except IndexError as exc:
            raise OpError(f"getitem: index {index!r} does not fit shape {x.shape}: {exc}") from None

    @staticmethod
    def backward(ctx, dout):
        xp = get_array_module(dout)
        dx = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_advanced(ctx.index):
            xp.add.at(dx, ctx.index, dout)
        else:
            dx[ctx.index] = dout
        return dx


class Concatenate(Function):
    """out = concatenate(xs, axis);  dxs = dout cut back into the pieces' sizes along ``axis``"""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        xp = get_array_module(*xs)
        if not xs:
            raise OpError("concatenate: needs at least one tensor")
        nd = xs[0].ndim
        ax = axis % nd if nd else 0
        for i, x in enumerate(xs):
            if x.ndim != nd or x.shape[:ax] + x.shape[ax + 1 :] != xs[0].shape[:ax] + xs[0].shape[ax + 1 :]:
                raise ShapeError(
                    f"concatenate: along axis {axis}, every input must match the first {xs[0].shape} "
                    f"except on that axis; input {i} has shape {x.shape}"
                )
        ctx.axis = ax
        ctx.bounds = numpy.cumsum([x.shape[ax] for x in xs])[:-1].tolist()
        return xp.concatenate(xs, axis=ax)

    @staticmethod
    def backward(ctx, dout):
        xp = get_array_module(dout)
        return tuple(xp.split(dout, ctx.bounds, axis=ctx.axis))


class Stack(Function):
    """out = stack(xs, axis);  dxs = the slices of dout along the new axis"""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        xp = get_array_module(*xs)
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise ShapeError(f"stack: all inputs need the same shape, got {[x.shape for x in xs]}")
        out = xp.stack(xs, axis=axis)
        ctx.axis = axis % out.ndim
        return out

    @staticmethod
    def backward(ctx, dout):
        n = dout.shape[ctx.axis]
        lead = (slice(None),) * ctx.axis
        return tuple(dout[lead + (i,)] for i in range(n))


class Where(Function):
    """out = where(cond, a, b);  da = dout where cond else 0,  db = dout where not cond else 0"""

    @staticmethod
    def forward(ctx, cond, a, b):
        xp = get_array_module(cond, a, b)
        if cond.dtype != bool:
            raise OpError(f"where: the condition must be boolean, got dtype {cond.dtype}")
        ctx.save_for_backward(cond)
        return xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, dout):
        (cond,) = ctx.saved
        xp = get_array_module(dout)
        zero = xp.zeros((), dtype=dout.dtype)
        da = xp.where(cond, dout, zero) if ctx.needs_input_grad[1] else None
        db = xp.where(cond, zero, dout) if ctx.needs_input_grad[2] else None
        return None, da, db


class MaskedFill(Function):
    """out = value where mask else x;  dx = 0 where mask else dout"""

    name = "masked_fill"

    @staticmethod
    def forward(ctx, x, mask, value):
        xp = get_array_module(x, mask)
        if mask.dtype != bool:
            raise OpError(f"masked_fill: the mask must be boolean, got dtype {mask.dtype}")
        try:
            shape = numpy.broadcast_shapes(x.shape, mask.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            raise ShapeError(
                f"masked_fill: mask of shape {mask.shape} does not broadcast to the input's shape {x.shape}"
            )
        ctx.save_for_backward(mask)
        return xp.where(mask, xp.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, dout):
        (mask,) = ctx.saved
        xp = get_array_module(dout)
        return xp.where(mask, xp.zeros((), dtype=dout.dtype), dout), None


# --------------------------------------------------------------------------- functions
def add(a, b):
    """a + b, broadcasting."""
    return _binary(Add, a, b)


def sub(a, b):
    """a - b, broadcasting."""
    return _binary(Sub, a, b)


def mul(a, b):
    """a * b, broadcasting."""
    return _binary(Mul, a, b)


def div(a, b):
    """a / b, broadcasting."""
    return _binary(Div, a, b)


def pow(a, b):
    """a ** b, broadcasting; either may be a Python number."""
    return _binary(Pow, a, b)


def maximum(a, b):
    """Elementwise maximum; ties share the gradient equally."""
    return _binary(Maximum, a, b)


def minimum(a, b):
    """Elementwise minimum; ties share the gradient equally."""
    return _binary(Minimum, a, b)


def matmul(a, b):
    """a @ b with NumPy's rules (batched, broadcast batch axes, 1-D operands)."""
    return _binary(MatMul, a, b)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    """max(x, 0)."""
    return Relu.apply(x)


def abs(x):
    return Abs.apply(x)


def astype(x, dtype):
    """x cast to ``dtype`` (differentiable between float dtypes)."""
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    """x with a new shape (one axis may be -1): ``reshape(x, 2, 3)`` or ``reshape(x, (2, 3))``."""
    return Reshape.apply(x, _shape_arg(shape))


def transpose(x, *axes):
    """x with its axes permuted; no axes reverses them, as in NumPy."""
    axes = _shape_arg(axes)
    return Transpose.apply(x, axes if axes else None)


def swapaxes(x, axis1, axis2):
    """x with two axes exchanged."""
    perm = list(range(x.ndim))
    perm[axis1], perm[axis2] = perm[axis2], perm[axis1]
    return Transpose.apply(x, tuple(perm))


def broadcast_to(x, shape):
    """x repeated (without copying) to ``shape`` by NumPy's broadcasting rules."""
    return BroadcastTo.apply(x, tuple(shape))


def squeeze(x, axis=None):
    """x without the size-1 axes (all of them, or those in ``axis``)."""
    shape = x.shape
    if axis is None:
        axes = {i for i, n in enumerate(shape) if n == 1}
    else:
        axes = {a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)}
        bad = [a for a in axes if shape[a] != 1]
        if bad:
            raise ShapeError(f"squeeze: axis {bad[0]} of shape {shape} has size {shape[bad[0]]}, not 1")
    return Reshape.apply(x, tuple(n for i, n in enumerate(shape) if i not in axes))


def unsqueeze(x, axis):
    """x with a new axis of size 1 inserted at ``axis``."""
    ndim = x.ndim + 1
    if not -ndim <= axis < ndim:
        raise ShapeError(f"unsqueeze: axis {axis} is out of range for a result of {ndim} axes (input shape {x.shape})")
    shape = list(x.shape)
    shape.insert(axis % ndim, 1)
    return Reshape.apply(x, tuple(shape))


def _index_arrays(index, like):
    """Tensors in an index become arrays on the indexed tensor's device."""
    if isinstance(index, tuple):
        return tuple(_index_arrays(i, like) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return get_array_module(like.data).asarray(index)
    return index


def getitem(x, index):
    """x[index] with slices, ints, None, Ellipsis, boolean masks and integer arrays."""
    return GetItem.apply(x, _index_arrays(index, x))


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join same-shaped tensors along a new axis."""
    return Stack.apply(*tensors, axis=axis)


def split(x, indices_or_sections, axis=0):
    """Cut x along ``axis`` into equal sections (an int) or at the given indices, as np.split."""
    n = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ShapeError(f"split: axis {axis} of shape {x.shape} cannot be split into {indices_or_sections} equal sections")
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step))
    else:
        bounds = [0, *indices_or_sections, n]
    lead = (slice(None),) * (axis % x.ndim)
    return [getitem(x, lead + (slice(lo, hi),)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def where(cond, a, b):
    """Pick from ``a`` where ``cond`` is True, else from ``b`` (``cond`` is not differentiable)."""
    cond = _data(cond)
    like = a if isinstance(a, Tensor) else b
    if not isinstance(a, Tensor):
        a = _lift(a, like)
    if not isinstance(b, Tensor):
        b = _lift(b, like)
    return Where.apply(cond, a, b)


def masked_fill(x, mask, value):
    """x with ``value`` written where the boolean ``mask`` is True (gradient 0 there)."""
    return MaskedFill.apply(x, _data(mask), value)


def compare(ufunc_name, a, b):
    """A boolean Tensor from comparing a and b (no gradient flows through a comparison)."""
    a_data, b_data = _data(a), _data(b)
    xp = get_array_module(a_data, b_data)
    return Tensor(getattr(xp, ufunc_name)(a_data, b_data))
