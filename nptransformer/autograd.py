"""A small reverse-mode autograd: Tensor, Function, the graph walk, and no_grad.

How it works, in five sentences. Every op is a ``Function`` with a ``forward`` and a
``backward`` written side by side on raw arrays. ``Function.apply`` runs the forward and, when a
gradient is wanted, records a ``Context`` as the output's ``grad_fn``: a node of the graph that
knows which Function ran, what the forward saved for the backward, and where each input came
from (the leaf Tensor itself, or the node of the op that made it). The graph holds nodes and
saved arrays, not the tensors that flowed between ops, so an output that no backward needs is
freed as soon as the Python code lets go of it. ``Tensor.backward`` orders the nodes
topologically (iteratively, so a chain of 100,000 ops is fine) and calls each backward once, from
the output back to the leaves, adding up every contribution a node gets; broadcasting is undone
there, once, so no op has to undo it itself.

This engine computes first-order gradients: backward passes work on plain arrays and are not
themselves recorded, so gradients of gradients are not available.
"""
from __future__ import annotations

import contextlib
import threading
import traceback
import weakref

import numpy

from .backend import get_array_module, to_device

DEFAULT_DTYPE = numpy.float32


class OpError(ValueError):
    """An op was called with inputs it cannot take (wrong shapes, dtypes or values)."""


class ShapeError(OpError):
    """An op was called with shapes it cannot combine."""


def describe_shapes(**arrays) -> str:
    """'x shape (4, 5), bias shape None': the shapes of named arrays, for an op's error message.

    Called only when raising: formatting the string on every call would cost more than the
    checks it serves.
    """
    return ", ".join(f"{name} shape {None if a is None else a.shape}" for name, a in arrays.items())


# --------------------------------------------------------------------------- grad mode
class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()

# Objects told about every op: ``forward(fn, ctx, arrays, out)`` after each forward and
# ``backward(ctx, dout, grads)`` after each backward; an observer that also has
# ``before_forward(fn, ctx, arrays)`` or ``before_backward(ctx, dout)`` is called just before
# (the profiler times ops this way). Anomaly mode (nptransformer.anomaly) and the profiler
# (nptransformer.profiler) add themselves here; the list is empty otherwise, so the engine pays
# one truth test per op.
_observers: list = []


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``: ops then record no graph."""
    return _grad_mode.enabled


class no_grad(contextlib.ContextDecorator):
    """Record no graph inside: ``with no_grad(): ...`` or ``@no_grad()`` on a function.

    Used for evaluation, decoding and optimizer updates, where no gradient is wanted and the
    saved activations would only cost memory. The previous mode is restored on exit, even when
    the body raises.
    """

    def __enter__(self):
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = False
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._previous
        return False

    def _recreate_cm(self):
        return type(self)()


# --------------------------------------------------------------------------- Function
class Context:
    """A node of the graph: what one op call leaves for its backward.

    ``save_for_backward(*arrays)`` keeps arrays (read back as ``ctx.saved``); other values can be
    set as plain attributes (``ctx.axis = axis``). ``ctx.needs_input_grad[i]`` tells whether
    input ``i`` wants a gradient, so a backward may skip work for inputs that do not.

    When the graph is recorded, ``Function.apply`` also sets ``fn`` (the Function class),
    ``output_shape`` and ``output_dtype`` (of the tensor this node made) and ``inputs``: one entry per
    positional argument of the forward, the leaf Tensor itself when it is a leaf that needs a
    gradient, the node that made it when an op made it, None otherwise. A backward releases
    the node (``released`` becomes True and everything but ``fn`` is dropped) unless it was
    called with ``retain_graph=True``.
    """

    released = False
    retained = None  # a weak reference to the output Tensor, set by Tensor.retain_grad()

    def save_for_backward(self, *arrays):
        self.saved = arrays

    def __repr__(self):
        if self.released:
            return f"<{self.fn.op_name()} node, released by a backward>"
        return f"<{self.fn.op_name()} node: output {self.output_shape} {self.output_dtype}>"


def _release(node):
    """Drop what a node keeps (saved arrays, inputs) once its backward has run."""
    fn = node.fn
    node.__dict__.clear()
    node.fn, node.released = fn, True


class Function:
    """Base class of every op: a ``forward`` and a ``backward`` on raw arrays, side by side.

    Subclass it and write two static methods::

        class Square(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x

            @staticmethod
            def backward(ctx, dout):
                (x,) = ctx.saved
                return 2 * x * dout

        y = Square.apply(t)

    ``forward`` receives the arrays of its Tensor arguments (other arguments as given) and
    returns one array. ``backward`` receives the gradient of the loss with respect to that
    output and returns one gradient per positional argument of ``forward`` (a tuple, or a single
    array when there is one argument); return None for arguments that take no gradient, and
    trailing non-tensor arguments (an axis, a shape) may be left out.
    A gradient may have the broadcast shape of the output: the engine sums it back to the
    input's shape. ``backward`` must not modify ``dout`` in place.
    """

    name = None  # the op's name in error messages; defaults to the class name, lower-cased

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, dout):
        raise NotImplementedError

    @classmethod
    def op_name(cls) -> str:
        return cls.name or cls.__name__.lower()

    @classmethod
    def apply(cls, *args, **kwargs) -> "Tensor":
        ctx = Context()
        arrays = []
        needs = []
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a.data)
                needs.append(a.requires_grad)
            else:
                arrays.append(a)
                needs.append(False)
        if len(arrays) > 1:
            _check_one_device(arrays)
        ctx.needs_input_grad = needs = tuple(needs)
        tracked = _grad_mode.enabled and True in needs
        if _observers:
            for observer in _observers:
                if hasattr(observer, "before_forward"):
                    observer.before_forward(cls, ctx, arrays)
        try:
            out = cls.forward(ctx, *arrays, **kwargs)
        except OpError:
            raise
        except (ValueError, IndexError, TypeError) as exc:
            shapes = ", ".join(str(getattr(a, "shape", type(a).__name__)) for a in arrays)
            raise OpError(f"{cls.op_name()}: {exc} (input shapes: {shapes}){_where(exc)}") from None
        if type(out) is not numpy.ndarray and isinstance(out, numpy.generic):
            out = numpy.asarray(out)  # NumPy reductions return scalars; keep every .data an array
        if _observers:
            for observer in _observers:
                observer.forward(cls, ctx, arrays, out)
        result = Tensor._from_op(out, tracked)
        if tracked:  # record the graph: which op made the result, from which nodes
            ctx.fn = cls
            ctx.output_shape, ctx.output_dtype = out.shape, out.dtype
            ctx.inputs = tuple(_node_of(a) if need else None for a, need in zip(args, needs))
            result.grad_fn = ctx
        return result


def _node_of(t):
    """Where a tensor that needs a gradient comes from: the node that made it, or itself (a leaf)."""
    return t if t.grad_fn is None else t.grad_fn


def _check_one_device(arrays):
    """Raise a DeviceError when arrays of two devices meet in one op.

    Plain NumPy arrays and non-arrays (shapes, axes, None) pass without asking the backend:
    this runs on every op call, and at batch 1 the op calls are what a decoding step costs.
    """
    for a in arrays:
        if type(a) is not numpy.ndarray and hasattr(a, "dtype"):  # another kind of array (or a scalar)
            get_array_module(*arrays)
            return


def _where(exc) -> str:
    """' [in forward, file:line]': the line of the op's forward where ``exc`` came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    if len(frames) < 2:  # raised by Function.apply itself
        return ""
    return f" [in {frames[1].name}, {frames[1].filename}:{frames[1].lineno}]"


# --------------------------------------------------------------------------- Tensor
def _as_array(data, dtype):
    """An array from ``data``: arrays keep their module and dtype; Python values get defaults."""
    if isinstance(data, numpy.generic):
        data = numpy.asarray(data)  # a NumPy scalar is immutable; a 0-d array is not
    if hasattr(data, "__array_namespace__"):
        if dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        return data
    if isinstance(data, Tensor):
        raise TypeError("Tensor(...) got a Tensor; use t.detach() for a copy without history")
    array = numpy.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == numpy.float64:
        array = array.astype(DEFAULT_DTYPE)
    return array


def _is_float(dtype) -> bool:
    return numpy.dtype(dtype).kind == "f"  # numpy.issubdtype(dtype, numpy.floating), 20 times faster


class Tensor:
    """An array (``.data``) with an optional gradient (``.grad``) and the op that made it.

    ``grad_fn`` is the graph node (a ``Context``) of the op that made this tensor, None for a
    leaf: a tensor made by the user, or made by an op while no gradient was wanted.

    ``Tensor(data, requires_grad=False, dtype=None)``: an existing NumPy or CuPy array keeps its
    dtype (float64 stays float64, as gradcheck needs); Python numbers and lists become float32
    (floats) or int64 (integers). A Python scalar combined with a tensor takes the tensor's
    dtype, so ``x * 0.5`` stays float32.
    """

    __slots__ = ("data", "grad", "requires_grad", "grad_fn", "__weakref__")
    __array_ufunc__ = None  # `ndarray * Tensor` defers to Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and not _is_float(self.data.dtype):
            raise TypeError(
                f"Tensor: only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.grad_fn = None

    @classmethod
    def _from_op(cls, data, requires_grad):
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t.grad_fn = None
        return t

    # ---- array facts
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self) -> str:
        from .backend import device_of

        return device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = numpy.array_repr(numpy.asarray(self.numpy()))[len("array(") : -1].replace("\n", "\n ")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.device != "cpu":
            extra += f", device={self.device!r}"
        return f"Tensor({body}{extra})"

    def numpy(self):
        """The data as a NumPy array on the host (copied from the GPU when needed)."""
        return to_device(self.data, "cpu")

    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item: only one-element tensors have an item, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data with no history and no gradient (shares memory)."""
        return Tensor._from_op(self.data, False)

    def requires_grad_(self, requires_grad=True) -> "Tensor":
        if requires_grad and not _is_float(self.dtype):
            raise TypeError(f"requires_grad_: dtype {self.dtype} cannot require gradients")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this intermediate tensor after backward (leaves always keep it).

        The node remembers the tensor through a weak reference: the graph does not keep the
        tensor alive, and a tensor nobody holds any more gets no gradient.
        """
        if self.grad_fn is not None:
            self.grad_fn.retained = weakref.ref(self)
        return self

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device`` ('cpu' or 'cuda'); a differentiable copy when it moves."""
        if self.device == device:
            return self
        return _prim.ToDevice.apply(self, device=device)

    # ---- backward
    def backward(self, grad=None, retain_graph=False):
        """Back-propagate from this tensor, adding d(self)/d(leaf) into every leaf's ``.grad``.

        A scalar seeds with 1; any other shape needs ``grad`` of its own shape (the upstream
        gradient). Gradients accumulate: call ``zero_grad()`` (or set ``.grad = None``) between
        steps. The saved arrays are released as the walk passes them, unless ``retain_graph``.
        """
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: this tensor has shape {self.shape}; only a one-element tensor can "
                    "seed itself with 1. Reduce it first (e.g. loss.sum() or loss.mean()), or pass "
                    "grad=<array of the same shape>"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else _as_array(grad, self.dtype)
            if grad.shape != self.shape:
                raise ShapeError(f"backward: grad has shape {grad.shape} but the tensor has shape {self.shape}")
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph to walk")
        _run_backward(self, grad, retain_graph)

    # ---- operators (the ops live in nptransformer.functional.primitives)
    def __add__(self, other):
        return _prim.add(self, other)

    def __radd__(self, other):
        return _prim.add(other, self)

    def __sub__(self, other):
        return _prim.sub(self, other)

    def __rsub__(self, other):
        return _prim.sub(other, self)

    def __mul__(self, other):
        return _prim.mul(self, other)

    def __rmul__(self, other):
        return _prim.mul(other, self)

    def __truediv__(self, other):
        return _prim.div(self, other)

    def __rtruediv__(self, other):
        return _prim.div(other, self)

    def __pow__(self, other):
        return _prim.pow(self, other)

    def __rpow__(self, other):
        return _prim.pow(other, self)

    def __matmul__(self, other):
        return _prim.matmul(self, other)

    def __rmatmul__(self, other):
        return _prim.matmul(other, self)

    def __neg__(self):
        return _prim.Neg.apply(self)

    def __getitem__(self, index):
        return _prim.getitem(self, index)

    # Comparisons give boolean tensors (masks) and are not differentiable.
    def __lt__(self, other):
        return _prim.compare("less", self, other)

    def __le__(self, other):
        return _prim.compare("less_equal", self, other)

    def __gt__(self, other):
        return _prim.compare("greater", self, other)

    def __ge__(self, other):
        return _prim.compare("greater_equal", self, other)

    # ---- methods with NumPy's words
    def exp(self):
        return _prim.Exp.apply(self)

    def log(self):
        return _prim.Log.apply(self)

    def sqrt(self):
        return _prim.Sqrt.apply(self)

    def tanh(self):
        return _prim.Tanh.apply(self)

    def sigmoid(self):
        return _prim.Sigmoid.apply(self)

    def relu(self):
        return _prim.Relu.apply(self)

    def abs(self):
        return _prim.Abs.apply(self)

    def maximum(self, other):
        return _prim.maximum(self, other)

    def minimum(self, other):
        return _prim.minimum(self, other)

    def sum(self, axis=None, keepdims=False):
        return _prim.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _prim.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _prim.Max.apply(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return _prim.Min.apply(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, ddof=0):
        return _prim.Var.apply(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def reshape(self, *shape):
        return _prim.reshape(self, *shape)

    def transpose(self, *axes):
        return _prim.transpose(self, *axes)

    @property
    def T(self):
        return _prim.transpose(self)

    def swapaxes(self, axis1, axis2):
        return _prim.swapaxes(self, axis1, axis2)

    def broadcast_to(self, shape):
        return _prim.broadcast_to(self, shape)

    def squeeze(self, axis=None):
        return _prim.squeeze(self, axis)

    def unsqueeze(self, axis):
        return _prim.unsqueeze(self, axis)

    def matmul(self, other):
        return _prim.matmul(self, other)

    def masked_fill(self, mask, value):
        return _prim.masked_fill(self, mask, value)

    def astype(self, dtype):
        return _prim.astype(self, dtype)


def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    """Shorthand for ``Tensor(data, requires_grad, dtype)``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# --------------------------------------------------------------------------- the graph walk
def topological_order(root):
    """The nodes reachable from ``root`` (a Tensor or a node), each after every node it feeds.

    A node is a ``Context`` (an op call) or a leaf Tensor that needs a gradient. Iterative
    depth-first search (no recursion, so any depth works); returned outputs-first, so walking
    the list in order meets a node only after everything its output went into.
    """
    if isinstance(root, Tensor):
        root = _node_of(root)
    order = []
    visited = set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in visited:  # marked when expanded, not when pushed: only then is the order right
            continue
        visited.add(node)
        stack.append((node, True))
        if isinstance(node, Tensor):  # a leaf: nothing comes before it
            continue
        if node.released:
            raise RuntimeError(
                "backward: this graph was already walked and its saved arrays were released; "
                "pass retain_graph=True to the first backward() to walk it twice"
            )
        for p in node.inputs:
            if p is not None and p not in visited:
                stack.append((p, False))
    order.reverse()
    return order


def _unbroadcast(grad, shape, fn):
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ShapeError(f"{fn.op_name()}.backward returned a gradient of shape {grad.shape} for an input of shape {shape}")
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1
    )
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if extra:
        grad = grad.reshape(grad.shape[extra:])
    if grad.shape != shape:
        raise ShapeError(
            f"{fn.op_name()}.backward returned a gradient of shape {grad.shape} for an input of "
            f"shape {shape}; a gradient must have its input's shape (or a broadcast of it)"
        )
    return grad


def _accumulate(t, g):
    """Add gradient ``g`` into ``t.grad`` (a copy the first time: ``g`` may be shared)."""
    if g.dtype != t.dtype:
        g = g.astype(t.dtype)
    if t.grad is None:
        t.grad = g.copy()
    else:
        t.grad += g


def _run_backward(root, grad, retain_graph):
    root = _node_of(root)
    grads = {root: grad}
    order = topological_order(root)
    order.reverse()  # inputs first, so that pop() below takes the outputs first
    while order:
        # Popped, not iterated: once its backward has run, a node is held by nothing here, so its
        # saved arrays are freed as the walk goes on, not at its end.
        node = order.pop()
        g = grads.pop(node, None)
        if g is None:
            continue
        if isinstance(node, Tensor):  # a leaf
            if node.requires_grad:
                _accumulate(node, g)
            continue
        if node.retained is not None:
            t = node.retained()
            if t is not None:
                _accumulate(t, g)
        if _observers:
            for observer in _observers:
                if hasattr(observer, "before_backward"):
                    observer.before_backward(node, g)
        in_grads = node.fn.backward(node, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if _observers:
            for observer in _observers:
                observer.backward(node, g, in_grads)
        if len(in_grads) < len(node.inputs):  # trailing non-tensor arguments may be left out
            if any(m is not None for m in node.inputs[len(in_grads) :]):
                raise RuntimeError(
                    f"{node.fn.op_name()}.backward returned {len(in_grads)} gradient(s) for "
                    f"{len(node.inputs)} forward argument(s), and a tensor that needs a gradient is "
                    "among the missing; return one per argument (None where none)"
                )
        elif len(in_grads) > len(node.inputs):
            raise RuntimeError(
                f"{node.fn.op_name()}.backward returned {len(in_grads)} gradient(s) for only "
                f"{len(node.inputs)} forward argument(s)"
            )
        for inp, ig in zip(node.inputs, in_grads):
            if inp is None or ig is None:
                continue
            ig = _unbroadcast(ig, inp.shape if isinstance(inp, Tensor) else inp.output_shape, node.fn)
            if inp in grads:
                grads[inp] = grads[inp] + ig
            else:
                grads[inp] = ig
        if not retain_graph:
            _release(node)


from .functional import primitives as _prim  # noqa: E402  (the ops need Tensor and Function first)
