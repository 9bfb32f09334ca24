"""Exercises: write a backward pass yourself, and let gradcheck tell you whether it is right.

Each exercise is one op of the package. The forward is the package's own; you write the backward
as a plain function on NumPy arrays. ``check`` puts the two together into an op (a subclass of
the package's ``Function`` whose ``backward`` calls yours), runs ``gradcheck`` on it in float64
on small fixed inputs, and prints one of

- ``PASS: ...`` when every gradient matches central finite differences;
- ``NOT IMPLEMENTED YET: ...`` while your function still raises ``NotImplementedError``;
- ``FAIL: ...`` otherwise: the worst element with your value and the numeric one, gradcheck's
  hint, the exercise's own hints, and the mistake's name when it is one we know.

``check`` prints and never raises on a wrong answer, so a notebook always runs to its end.
``grade`` returns the same verdict as a ``Result`` instead, for code that wants it::

    from nptransformer.exercises import check

    def softmax_backward(y, dy):
        return y * dy                   # not quite: check says what is missing

    check("softmax", softmax_backward)

The exercises; ``stub(name)`` is each one's blank function to start from:

    mul            mul_backward(a, b, dout) -> (da, db)                              warm-up
    tanh           tanh_backward(y, dy) -> dx                                        warm-up
    softmax        softmax_backward(y, dy) -> dx
    log_softmax    log_softmax_backward(y, dy) -> dx
    cross_entropy  cross_entropy_backward(p, target, dloss, label_smoothing) -> dlogits
    layer_norm     layer_norm_backward(xhat, rstd, weight, dy) -> (dx, dweight, dbias)
    attention      attention_backward(q, k, v, p, dout, scale) -> (dq, dk, dv)
    gelu           gelu_backward(x, cdf, dy) -> dx

Reference solutions: ``nptransformer/exercise_solutions.py`` (read them after trying).
"""
from __future__ import annotations

import math
import re
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy

from . import exercise_solutions as solutions
from .autograd import Tensor, _is_float
from .functional.activations import Gelu
from .functional.attention import ScaledDotProductAttention
from .functional.layer_norm import LayerNorm
from .functional.primitives import Mul, Tanh
from .functional.softmax import CrossEntropy, LogSoftmax, Softmax
from .gradcheck import GradcheckError, gradcheck

__all__ = ["EXERCISES", "Exercise", "Result", "check", "grade", "stub"]


@dataclass(frozen=True)
class Case:
    """One input on which an exercise is checked: the op's positional arguments and options."""

    description: str
    inputs: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A wrong backward that learners often write, and what to tell them when theirs matches it."""

    backward: Callable
    hint: str


@dataclass(frozen=True)
class Exercise:
    """One backward to write: which op's forward it pairs with and what the function gets and returns.

    ``inputs`` names the op's positional arguments, ``returns`` the gradients the learner's
    function returns (``"d" + input`` name, in that order); ``arguments(ctx, dout)`` picks what
    the function receives from what the forward saved.
    """

    name: str
    op: type
    inputs: tuple
    returns: tuple
    arguments: Callable
    stub: str
    make_cases: Callable
    hints: tuple
    mistakes: tuple = ()
    derivation: str = ""

    @property
    def function_name(self) -> str:
        return f"{self.name}_backward"

    @property
    def signature(self) -> str:
        """``softmax_backward(y, dy)``: the first line of the stub, without ``def`` and the colon."""
        return self.stub.splitlines()[0][len("def "):-1]


@dataclass(frozen=True)
class Result:
    """The verdict of ``grade``: ``status`` is "pass", "not implemented", "wrong" or "error"."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


class _AnswerError(Exception):
    """The learner's function returned or did something the op cannot use (not a wrong value)."""


# --------------------------------------------------------------------------- running an answer
def _learner_op(exercise: Exercise, backward_fn: Callable) -> type:
    """The package's op with its backward replaced by ``backward_fn``: same forward, same ctx."""

    def backward(ctx, dout):
        args = exercise.arguments(ctx, dout)
        before = [(i, a.tobytes()) for i, a in enumerate(args) if isinstance(a, numpy.ndarray)]
        result = backward_fn(*args)
        for i, data in before:
            if args[i].tobytes() != data:
                name = _parameter_names(backward_fn, len(args))[i]
                raise _AnswerError(
                    f"your {exercise.function_name} changed its argument `{name}` in place. A backward "
                    "must leave its inputs alone: the engine may still need them (dout can be shared with "
                    "another op's gradient). Compute into new arrays: `g = dy * w`, not `dy *= w`."
                )
        return _gradient_tuple(exercise, result)

    return type(f"{exercise.op.__name__}WithYourBackward", (exercise.op,), {
        "name": exercise.name,
        "backward": staticmethod(backward),
    })


def _parameter_names(fn, n):
    code = getattr(fn, "__code__", None)
    names = list(code.co_varnames[: code.co_argcount]) if code is not None else []
    return names + [f"argument {i}" for i in range(len(names), n)]


def _gradient_tuple(exercise: Exercise, result) -> tuple:
    """The learner's return value as the op's gradient tuple, or an _AnswerError saying what is off."""
    want = ", ".join(exercise.returns)
    parts = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(parts) != len(exercise.returns):
        got = f"a {type(result).__name__} of {len(parts)}" if isinstance(result, (tuple, list)) else "one value"
        raise _AnswerError(f"{exercise.function_name} must return {want} ({len(exercise.returns)} value(s)), but it returned {got}.")
    for name, part in zip(exercise.returns, parts):
        if part is None:
            raise _AnswerError(f"{exercise.function_name} returned None for {name}; return the gradient array.")
        if isinstance(part, Tensor):
            raise _AnswerError(
                f"{exercise.function_name} returned a Tensor for {name}. A backward works on plain arrays "
                "(the engine records no graph for it): compute with the NumPy arrays you were given."
            )
        if not hasattr(part, "shape"):
            raise _AnswerError(f"{exercise.function_name} returned a {type(part).__name__} for {name}; return a NumPy array.")
    grads = dict(zip(exercise.returns, parts))
    return tuple(grads.get("d" + name) for name in exercise.inputs)


def _run_gradcheck(op, case: Case):
    gradcheck(lambda *args: op.apply(*args, **case.kwargs), case.inputs)


def _gradients(op, case: Case):
    """Every float input's gradient for a fixed upstream gradient (float64), or None if it fails."""
    args = [Tensor(x.astype(numpy.float64), requires_grad=True) if _is_float(getattr(x, "dtype", numpy.int64)) else x
            for x in case.inputs]
    try:
        out = op.apply(*args, **case.kwargs)
        out.backward(numpy.random.default_rng(1).standard_normal(out.shape))
    except Exception:  # a broken answer cannot be compared; the caller just gives no diagnosis
        return None
    return [a.grad for a in args if isinstance(a, Tensor)]


def _same(grads_a, grads_b) -> bool:
    if grads_a is None or grads_b is None:
        return False
    return all(a is not None and b is not None and a.shape == b.shape and numpy.allclose(a, b, rtol=1e-7, atol=1e-10)
               for a, b in zip(grads_a, grads_b))


def _where_in(backward_fn, exc) -> str:
    """'in softmax_backward, line N: `code`' for the deepest frame of ``exc`` in the learner's function."""
    filename = getattr(getattr(backward_fn, "__code__", None), "co_filename", None)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    if not frames:
        return ""
    f = frames[-1]
    line = f": `{f.line.strip()}`" if f.line else ""
    return f"\n  in {f.name}, line {f.lineno}{line}"


def _input_line(exercise: Exercise, message: str) -> str:
    match = re.search(r"input (\d+)", message)
    if not match or int(match.group(1)) >= len(exercise.inputs):
        return ""
    name = exercise.inputs[int(match.group(1))]
    return f"\n  (input {match.group(1)} is `{name}`: the wrong gradient is your `d{name}`)"


def grade(name: str, backward_fn: Callable) -> Result:
    """Check ``backward_fn`` for exercise ``name``; return the verdict without printing it."""
    if name not in EXERCISES:
        raise ValueError(f"exercises: no exercise called {name!r}; the exercises are {', '.join(EXERCISES)}")
    if not callable(backward_fn):
        raise TypeError(f"exercises.check({name!r}, ...): pass your function itself, got {type(backward_fn).__name__}")
    exercise = EXERCISES[name]
    op = _learner_op(exercise, backward_fn)
    cases = exercise.make_cases()
    for case in cases:
        try:
            _run_gradcheck(op, case)
        except NotImplementedError:
            return Result(name, "not implemented", (
                f"NOT IMPLEMENTED YET: {exercise.signature} still raises NotImplementedError.\n"
                "  Replace the `raise NotImplementedError(...)` line with your code and run the cell again."
            ))
        except GradcheckError as exc:
            return Result(name, "wrong", _wrong_message(exercise, op, case, exc))
        except Exception as exc:  # the learner's code raised, or returned something unusable
            problem = str(exc) if isinstance(exc, _AnswerError) else f"{type(exc).__name__}: {exc}{_where_in(backward_fn, exc)}"
            shapes = ", ".join(f"{r} with the shape of {r[1:]}" for r in exercise.returns)
            return Result(name, "error", (
                f"FAIL: {exercise.signature} could not be checked on {case.description}.\n"
                f"  {problem}\n"
                f"  It should return {shapes}."
            ))
    checked = "; ".join(case.description for case in cases)
    return Result(name, "pass", f"PASS: {exercise.signature} matches finite differences everywhere (gradcheck in float64 on {checked}).")


def _wrong_message(exercise: Exercise, op, case: Case, exc: GradcheckError) -> str:
    lines = [f"FAIL: {exercise.signature} gives a wrong gradient on {case.description}.",
             str(exc) + _input_line(exercise, str(exc))]
    yours = _gradients(op, case)
    known = [m for m in exercise.mistakes if _same(yours, _gradients(_learner_op(exercise, m.backward), case))]
    if known:
        lines.append(f"This is a mistake we have seen before: {known[0].hint}")
    else:
        lines.append(f"Things to check for {exercise.name}:")
        lines.extend(f"  - {hint}" for hint in exercise.hints)
    if exercise.derivation:
        lines.append(f"The derivation, step by step: {exercise.derivation}")
    return "\n".join(lines)


def check(name: str, backward_fn: Callable) -> None:
    """Check your backward for exercise ``name`` and print PASS, NOT IMPLEMENTED YET or what is wrong.

    Never raises for a wrong or unfinished answer (so a notebook runs to its end); use
    ``grade(name, backward_fn).passed`` where you need the verdict as a value.
    """
    print(grade(name, backward_fn).message)


def stub(name: str) -> str:
    """The blank function to start exercise ``name`` from (paste it into a cell)."""
    if name not in EXERCISES:
        raise ValueError(f"exercises: no exercise called {name!r}; the exercises are {', '.join(EXERCISES)}")
    return EXERCISES[name].stub


# --------------------------------------------------------------------------- the exercises
def _normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _shape(name, x):
    return f"{name} of shape {tuple(x.shape)}"


def _mul_cases():
    rng = numpy.random.default_rng(10)
    a, b, c = _normal(rng, 3, 4), _normal(rng, 3, 4), _normal(rng, 4)
    return [Case(f"{_shape('a', a)}, {_shape('b', b)}", (a, b)),
            Case(f"{_shape('a', a)}, {_shape('b', c)} (broadcast)", (a, c))]


def _tanh_cases():
    x = _normal(numpy.random.default_rng(11), 3, 4)
    return [Case(_shape("x", x), (x,))]


def _softmax_cases():
    rng = numpy.random.default_rng(12)
    x2, x3 = _normal(rng, 3, 5, scale=2.0), _normal(rng, 2, 3, 4, scale=2.0)
    return [Case(_shape("x", x2), (x2,)), Case(_shape("x", x3), (x3,))]


def _cross_entropy_cases():
    rng = numpy.random.default_rng(13)
    logits, target = _normal(rng, 4, 5, scale=2.0), numpy.array([1, 0, 4, 2])
    return [Case(f"{_shape('logits', logits)}, label_smoothing=0", (logits, target)),
            Case(f"{_shape('logits', logits)}, label_smoothing=0.1", (logits, target), {"label_smoothing": 0.1})]


def _layer_norm_cases():
    rng = numpy.random.default_rng(14)
    x2, x3 = _normal(rng, 4, 6, scale=2.0) + 1.0, _normal(rng, 2, 3, 5, scale=2.0)
    return [Case(_shape("x", x2), (x2, 1.0 + _normal(rng, 6, scale=0.3), _normal(rng, 6))),
            Case(_shape("x", x3), (x3, 1.0 + _normal(rng, 5, scale=0.3), _normal(rng, 5)))]


def _attention_cases():
    rng = numpy.random.default_rng(15)
    q, k, v = _normal(rng, 2, 3, 4), _normal(rng, 2, 5, 4), _normal(rng, 2, 5, 3)
    cq, ck, cv = _normal(rng, 2, 4, 3), _normal(rng, 2, 4, 3), _normal(rng, 2, 4, 2)
    return [Case(f"q {q.shape}, k {k.shape}, v {v.shape}, scale 1/√4", (q, k, v, None), {"scale": 0.5}),
            Case(f"q {cq.shape}, k {ck.shape}, v {cv.shape}, causal mask, scale 1/√3", (cq, ck, cv, None),
                 {"is_causal": True, "scale": 1 / math.sqrt(3)})]


def _gelu_cases():
    x = _normal(numpy.random.default_rng(16), 3, 4, scale=1.5)
    return [Case(_shape("x", x), (x,))]


def _smoothing_over_others(p, target, dloss, label_smoothing):
    q = numpy.full_like(p, label_smoothing / (p.shape[1] - 1))
    q[numpy.arange(p.shape[0]), target] = 1 - label_smoothing
    return (p - q) * (dloss / p.shape[0])


def _layer_norm_with(dx):
    """A layer_norm backward with the right dweight and dbias and ``dx(g, xhat, rstd, dy)`` (a mistake)."""

    def backward(xhat, rstd, weight, dy):
        _, dweight, dbias = solutions.layer_norm_backward(xhat, rstd, weight, dy)
        return dx(dy * weight, xhat, rstd, dy), dweight, dbias

    return backward


def _mean(a):
    return a.mean(axis=-1, keepdims=True)


def _rowsum(a):
    return a.sum(axis=-1, keepdims=True)


def _pdf(x):
    return numpy.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


_EXERCISE_LIST = [
    Exercise(
        name="mul", op=Mul, inputs=("a", "b"), returns=("da", "db"),
        arguments=lambda ctx, dout: (*ctx.saved, dout),
        stub='''def mul_backward(a, b, dout):
    """The backward of out = a * b (elementwise).

    a, b: the forward's inputs; dout: dL/dout, the gradient arriving from above.
    Return (da, db). (If a and b were broadcast, return gradients of dout's shape:
    the engine sums them back to each input's shape.)
    """
    raise NotImplementedError("mul_backward: replace this line with your code")
''',
        make_cases=_mul_cases,
        hints=("Change a alone: out changes by b times as much. So dL/da = dout * b; and dL/db?",
               "Multiply by dout: it carries everything above this op (the chain rule)."),
        mistakes=(
            Mistake(lambda a, b, dout: (dout * a, dout * b),
                    "da and db are swapped: each input's gradient is dout times the OTHER input."),
            Mistake(lambda a, b, dout: (b, a),
                    "dout is missing: the chain rule multiplies the local derivative by the gradient from above."),
        ),
    ),
    Exercise(
        name="tanh", op=Tanh, inputs=("x",), returns=("dx",),
        arguments=lambda ctx, dout: (ctx.saved[0], dout),
        stub='''def tanh_backward(y, dy):
    """The backward of y = tanh(x), elementwise.

    y: the forward's output tanh(x) (the forward saved y, not x); dy: dL/dy.
    Return dx = dL/dx, same shape.
    """
    raise NotImplementedError("tanh_backward: replace this line with your code")
''',
        make_cases=_tanh_cases,
        hints=("d tanh(x)/dx = 1 - tanh(x)²: write it with y, which you have, instead of x, which you do not.",
               "Multiply the local derivative by dy (the chain rule)."),
        mistakes=(
            Mistake(lambda y, dy: dy * (1 - y), "d tanh(x)/dx = 1 - tanh(x)² = 1 - y²: the square is missing."),
            Mistake(lambda y, dy: 1 - y * y, "dy is missing: the chain rule multiplies the local derivative by dy."),
            Mistake(lambda y, dy: dy * (1 - numpy.tanh(y) ** 2),
                    "y is already tanh(x): use 1 - y², do not take tanh of y again."),
        ),
    ),
    Exercise(
        name="softmax", op=Softmax, inputs=("x",), returns=("dx",),
        arguments=lambda ctx, dout: (ctx.saved[0], dout),
        stub='''def softmax_backward(y, dy):
    """The backward of y = softmax(x) along the last axis.

    y:  the forward's output, shape (..., V); every row sums to 1.
    dy: dL/dy, the gradient arriving from above, same shape.
    Return dx = dL/dx, same shape.
    """
    raise NotImplementedError("softmax_backward: replace this line with your code")
''',
        make_cases=_softmax_cases,
        hints=("Every y_i depends on every x_j, through the sum in the denominator: work out ∂y_i/∂x_j "
               "for i = j and for i != j, then dx_j = sum_i dy_i ∂y_i/∂x_j.",
               "Reduce along the last axis only, with keepdims=True, so each row's number broadcasts back over its row.",
               "The result is a vector-Jacobian product: never build the (V, V) Jacobian, one line of array code does it."),
        mistakes=(
            Mistake(lambda y, dy: y * dy,
                    "the term -y * sum(dy * y) is missing: y_i also moves when x_j (j != i) moves, because "
                    "every x_j is in the denominator, and ∂y_i/∂x_j = -y_i y_j there."),
            Mistake(lambda y, dy: dy * y * (1 - y),
                    "that is only the diagonal of the Jacobian, ∂y_i/∂x_i = y_i (1 - y_i). The off-diagonal "
                    "entries ∂y_i/∂x_j = -y_i y_j add up to a term -y_j sum_{i != j} dy_i y_i."),
            Mistake(lambda y, dy: y * (dy - (dy * y).sum()),
                    "the sum runs over the whole array: each row is its own softmax, so sum along the last "
                    "axis only (axis=-1, keepdims=True)."),
        ),
        derivation="docs/derivations/softmax.md",
    ),
    Exercise(
        name="log_softmax", op=LogSoftmax, inputs=("x",), returns=("dx",),
        arguments=lambda ctx, dout: (ctx.saved[0], dout),
        stub='''def log_softmax_backward(y, dy):
    """The backward of y = log_softmax(x) = x - log(sum(exp(x))) along the last axis.

    y:  the forward's output, shape (..., V); exp(y) is the softmax.
    dy: dL/dy, same shape.
    Return dx = dL/dx, same shape.
    """
    raise NotImplementedError("log_softmax_backward: replace this line with your code")
''',
        make_cases=_softmax_cases,
        hints=("y_i = x_i - log sum_j exp(x_j): the first term gives dy itself, the second gives "
               "d/dx_j log sum exp(x) = softmax(x)_j = exp(y_j) for every i.",
               "Sum dy along the last axis with keepdims=True."),
        mistakes=(
            Mistake(lambda y, dy: dy - numpy.exp(y) * dy,
                    "the log-sum-exp term touches every y_i, so its gradient collects all of dy: "
                    "exp(y) times sum(dy) along the last axis, not times dy."),
            Mistake(lambda y, dy: dy - y * _rowsum(dy),
                    "y is the log of the softmax; the derivative of log sum exp(x) is the softmax itself, exp(y)."),
        ),
        derivation="docs/derivations/cross_entropy.md",
    ),
    Exercise(
        name="cross_entropy", op=CrossEntropy, inputs=("logits", "target"), returns=("dlogits",),
        arguments=lambda ctx, dout: (CrossEntropy.probabilities(ctx), ctx.saved[3], dout, ctx.eps),
        stub='''def cross_entropy_backward(p, target, dloss, label_smoothing):
    """The backward of loss = mean over the N rows of -sum_c q_c log p_c, with p = softmax(logits)
    and the smoothed target q = (1 - label_smoothing) * onehot(target) + label_smoothing / V.

    p:      softmax(logits), shape (N, V) (rebuilt from what the forward saved, not the logits)
    target: the correct class of each row, integers of shape (N,)
    dloss:  dL/dloss, a 0-d array (the loss is one number)
    label_smoothing: the float eps in [0, 1]
    Return dlogits = dL/dlogits, shape (N, V).
    """
    raise NotImplementedError("cross_entropy_backward: replace this line with your code")
''',
        make_cases=_cross_entropy_cases,
        hints=("Per row, d(-sum_c q_c log softmax(z)_c)/dz = p - q (q sums to 1).",
               "The loss is a MEAN over the N rows: every row's gradient carries a factor 1/N.",
               "With label smoothing, q puts eps/V on EVERY class (the target included) and 1 - eps more on the target.",
               "Multiply by dloss at the end."),
        mistakes=(
            Mistake(lambda p, t, dloss, eps: solutions.cross_entropy_backward(p, t, dloss, eps) * p.shape[0],
                    "the 1/N is missing: the loss is the mean over the N rows, so each row's gradient is divided by N."),
            Mistake(lambda p, t, dloss, eps: solutions.cross_entropy_backward(p, t, dloss, 0.0),
                    "label smoothing is ignored: the target is q = (1 - eps) onehot + eps / V, not the one-hot vector."),
            Mistake(_smoothing_over_others,
                    "the smoothing mass is spread over the V - 1 wrong classes only; here (as in PyTorch) "
                    "eps / V goes to every class, the target included, so q_target = 1 - eps + eps / V."),
            Mistake(lambda p, t, dloss, eps: solutions.cross_entropy_backward(p, t, 1.0, eps),
                    "dloss is missing: multiply by the gradient arriving from above."),
        ),
        derivation="docs/derivations/cross_entropy.md",
    ),
    Exercise(
        name="layer_norm", op=LayerNorm, inputs=("x", "weight", "bias"), returns=("dx", "dweight", "dbias"),
        arguments=lambda ctx, dout: (LayerNorm.normalized(ctx), *ctx.saved[2:], dout),
        stub='''def layer_norm_backward(xhat, rstd, weight, dy):
    """The backward of y = xhat * weight + bias, where xhat = (x - mean(x)) * rstd over the last axis
    (C features) and rstd = 1 / sqrt(var(x) + eps).

    xhat:   the normalized input, shape (..., C)
    rstd:   1 / sigma for each row, shape (..., 1)
    weight: gamma, shape (C,)
    dy:     dL/dy, shape (..., C)
    Return (dx, dweight, dbias): dx of shape (..., C); dweight and dbias of shape (C,).
    """
    raise NotImplementedError("layer_norm_backward: replace this line with your code")
''',
        make_cases=_layer_norm_cases,
        hints=("First the affine part: dbias = sum of dy, dweight = sum of dy * xhat (over every leading "
               "axis), and the gradient reaching xhat is g = dy * weight.",
               "x reaches xhat three ways: directly, through the mean and through the variance. Each path gives a term.",
               "The mean and the variance average over C features: their paths carry a 1/C (use .mean(axis=-1), not .sum).",
               "Everything in dx is scaled by rstd = 1/sigma."),
        mistakes=(
            Mistake(_layer_norm_with(lambda g, xhat, rstd, dy: rstd * (g - _rowsum(g) - xhat * _rowsum(g * xhat))),
                    "the 1/C is missing: the mean and the variance are averages over the C features, so "
                    "their two terms use mean(g) and mean(g * xhat), not sums."),
            Mistake(_layer_norm_with(lambda g, xhat, rstd, dy: rstd * (g - _mean(g))),
                    "the variance path is missing: sigma depends on x too, which adds -xhat * mean(g * xhat)."),
            Mistake(_layer_norm_with(lambda g, xhat, rstd, dy: rstd * (g - xhat * _mean(g * xhat))),
                    "the mean path is missing: mu depends on every x_j, which adds -mean(g)."),
            Mistake(_layer_norm_with(lambda g, xhat, rstd, dy: rstd * g),
                    "mu and sigma were treated as constants: they depend on x, which adds -mean(g) and -xhat * mean(g * xhat)."),
            Mistake(_layer_norm_with(lambda g, xhat, rstd, dy: rstd * (dy - _mean(dy) - xhat * _mean(dy * xhat))),
                    "weight (gamma) is missing in dx: the gradient reaching xhat is g = dy * weight, use g throughout."),
            Mistake(_layer_norm_with(lambda g, xhat, rstd, dy: g - _mean(g) - xhat * _mean(g * xhat)),
                    "the factor rstd = 1/sigma is missing from dx."),
        ),
        derivation="docs/derivations/layer_norm.md",
    ),
    Exercise(
        name="attention", op=ScaledDotProductAttention, inputs=("q", "k", "v", "mask"), returns=("dq", "dk", "dv"),
        arguments=lambda ctx, dout: (*ctx.saved[:3], ScaledDotProductAttention.weights(ctx), dout, ctx.scale),
        stub='''def attention_backward(q, k, v, p, dout, scale):
    """The backward of out = p @ v with p = softmax(scale * q @ k^T + mask) along the last axis.

    q: (..., T, D)   k: (..., S, D)   v: (..., S, Dv)
    p: the attention weights, (..., T, S); 0 where the mask forbids a key
    dout: dL/dout, (..., T, Dv)   scale: the float that multiplied the scores
    Return (dq, dk, dv) with the shapes of q, k and v.
    Tip: a.swapaxes(-1, -2) transposes the last two axes of a batched array.
    """
    raise NotImplementedError("attention_backward: replace this line with your code")
''',
        make_cases=_attention_cases,
        hints=("Go backwards one step at a time: out = p @ v gives dv and dp; the softmax backward turns "
               "dp into dz (the gradient of the scaled, masked scores); the scores gave dq and dk.",
               "For a matrix product C = A @ B: dA = dC @ B^T and dB = A^T @ dC (batched: swapaxes(-1, -2)).",
               "The scores were multiplied by scale: dq and dk carry that factor too.",
               "Masked entries need no special code: p is 0 there, so the softmax backward gives 0."),
        mistakes=(
            Mistake(lambda q, k, v, p, dout, scale: solutions.attention_backward(q, k, v, p, dout, 1.0),
                    "the scale (1/sqrt(D)) is missing from dq and dk: the scores were scale * q @ k^T."),
            Mistake(lambda q, k, v, p, dout, scale: _attention_with(q, k, v, p, dout, scale, softmax=lambda dp: p * dp),
                    "the softmax backward lacks its row-sum term: dz = p * (dp - sum(dp * p, axis=-1, keepdims=True))."),
            Mistake(lambda q, k, v, p, dout, scale: _attention_with(q, k, v, p, dout, scale, softmax=lambda dp: dp),
                    "the softmax was skipped on the way back: dp is the gradient of p, and p = softmax(z); "
                    "dz = p * (dp - sum(dp * p, axis=-1, keepdims=True))."),
        ),
        derivation="docs/derivations/attention.md",
    ),
    Exercise(
        name="gelu", op=Gelu, inputs=("x",), returns=("dx",),
        arguments=lambda ctx, dout: (ctx.saved[0], Gelu.cdf(ctx), dout),
        stub='''def gelu_backward(x, cdf, dy):
    """The backward of y = gelu(x) = x * Phi(x), Phi the standard normal CDF.

    x:   the forward's input
    cdf: Phi(x), which the forward computed (the op reads it back as y / x)
    dy:  dL/dy, same shape as x
    Return dx = dL/dx. The normal density is phi(x) = exp(-x**2 / 2) / sqrt(2 * pi).
    """
    raise NotImplementedError("gelu_backward: replace this line with your code")
''',
        make_cases=_gelu_cases,
        hints=("Product rule: d(x Phi(x))/dx = Phi(x) + x Phi'(x), and Phi' = phi, the normal density.",
               "phi(x) = exp(-x²/2) / sqrt(2 pi): the 1/sqrt(2 pi) matters."),
        mistakes=(
            Mistake(lambda x, cdf, dy: dy * cdf,
                    "the product rule's second term x * phi(x) is missing: x appears twice in x * Phi(x)."),
            Mistake(lambda x, cdf, dy: dy * (cdf + x * numpy.exp(-0.5 * x * x)),
                    "the normal density has a factor 1/sqrt(2 pi): phi(x) = exp(-x²/2) / sqrt(2 pi)."),
            Mistake(lambda x, cdf, dy: dy * (cdf + _pdf(x)),
                    "the factor x is missing: d(x Phi(x))/dx = Phi(x) + x phi(x)."),
        ),
        derivation="docs/derivations/gelu.md",
    ),
]


def _attention_with(q, k, v, p, dout, scale, softmax):
    """The attention backward with its softmax step replaced by ``softmax(dp) -> dz`` (a mistake)."""
    dv = p.swapaxes(-1, -2) @ dout
    dp = dout @ v.swapaxes(-1, -2)
    dz = softmax(dp)
    return scale * (dz @ k), scale * (dz.swapaxes(-1, -2) @ q), dv


EXERCISES = {exercise.name: exercise for exercise in _EXERCISE_LIST}
