"""Anomaly mode: find the op that made the first NaN or Inf, in the forward or the backward.

A NaN spreads: one ``log(0)`` or ``exp(1000)`` deep inside a model turns the loss, then every
gradient, then every weight into NaN, and by the time anyone looks, every tensor is NaN and none
says where it started. Inside ``detect_anomaly()`` every op's output is checked as it is made::

    with nptransformer.detect_anomaly():
        loss = model(src, tgt_in)...
        loss.backward()

and the first non-finite value raises an ``AnomalyError`` naming the op, its input shapes, where
the op was called from, and whether its inputs were already non-finite (then no op made the
value: it came in with the data or the parameters). In the backward, the error names the op
whose ``backward`` returned the first non-finite gradient, and where that op was called in the
forward pass.

How: the engine (``nptransformer.autograd``) tells every object in its ``_observers`` list about
each forward and each backward; ``detect_anomaly`` adds one for the length of the ``with``. The
checks cost one ``isfinite`` pass over every array an op makes, and a walk up the call stack per
op, so use it to hunt a NaN, not for every run. NumPy's own floating-point warnings are switched
off inside (the AnomalyError says more than "overflow encountered in exp"). The observer list is
shared by all threads.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy

from . import autograd
from .backend import get_array_module

_ENGINE_FILES = tuple(
    os.path.join(os.path.dirname(__file__), name) for name in ("autograd.py", "anomaly.py", "functional")
)


class AnomalyError(FloatingPointError):
    """An op made a NaN or an infinity inside ``detect_anomaly()``; the message names the op."""


def _is_float_array(a) -> bool:
    return hasattr(a, "dtype") and hasattr(a, "shape") and numpy.issubdtype(a.dtype, numpy.floating)


def _first_bad(a):
    """(value, index) of the first non-finite entry of ``a``, or None when all are finite."""
    xp = get_array_module(a)
    bad = ~xp.isfinite(a)
    if not bool(bad.any()):
        return None
    flat = int(xp.argmax(bad.reshape(-1)))  # the first True in C order
    index = tuple(int(i) for i in numpy.unravel_index(flat, a.shape))
    value = float(a.reshape(-1)[flat])
    count = int(bad.sum())
    return value, index, count


def _caller() -> str:
    """'file:line in function' of the innermost frame outside the engine and the ops: the line of
    model or user code that called the op."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_ENGINE_FILES):
        frame = frame.f_back
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _describe(what, value, index, count, size) -> str:
    where = f" at index {index}" if index else ""
    return f"{what} {value}{where} ({count} of {size} values non-finite)"


class _Observer:
    """What ``detect_anomaly`` adds to the engine's observers: it checks every op's result."""

    def forward(self, fn, ctx, arrays, out):
        where = _caller()
        ctx.anomaly_where = where  # read back by ``backward`` to say where a failing op was made
        if not _is_float_array(out):
            return
        bad = _first_bad(out)
        if bad is None:
            return
        shapes = ", ".join(str(tuple(a.shape)) if hasattr(a, "shape") else type(a).__name__ for a in arrays)
        made = _describe("made", *bad, out.size)
        bad_inputs = [i for i, a in enumerate(arrays) if _is_float_array(a) and _first_bad(a) is not None]
        if bad_inputs:
            cause = (
                f"; its input(s) {bad_inputs} were already non-finite, so no op under detect_anomaly made "
                "them: they came in with the data or the parameters"
            )
        else:
            cause = "; every input was finite, so this op made it"
        raise AnomalyError(
            f"detect_anomaly: the forward of op '{fn.op_name()}' {made}, called at {where} "
            f"(input shapes: {shapes}){cause}"
        )

    def backward(self, ctx, dout, grads):
        for i, (inp, grad) in enumerate(zip(ctx.inputs, grads)):
            if inp is None or grad is None or not _is_float_array(grad):
                continue
            bad = _first_bad(grad)
            if bad is None:
                continue
            upstream = _first_bad(dout) if _is_float_array(dout) else None
            if upstream is None:
                cause = "from a finite upstream gradient, so this backward made it"
            else:
                cause = "but the upstream gradient it received was already non-finite (the seed of backward())"
            where = getattr(ctx, "anomaly_where", "a forward run outside detect_anomaly")
            raise AnomalyError(
                f"detect_anomaly: the backward of op '{ctx.fn.op_name()}' {_describe('gave', *bad, grad.size)} "
                f"in the gradient of its argument {i} (shape {tuple(grad.shape)}), {cause}; the op was "
                f"called at {where}"
            )


class detect_anomaly(contextlib.ContextDecorator):
    """Inside, the first NaN or Inf that an op makes, forward or backward, raises AnomalyError.

    ``with detect_anomaly(): ...`` or ``@detect_anomaly()`` on a function. Nesting is fine; the
    checks stop when the outermost ``with`` ends, even when its body raised.
    """

    def __enter__(self):
        self._observer = _Observer()
        self._errstate = numpy.errstate(over="ignore", divide="ignore", invalid="ignore")
        self._errstate.__enter__()
        autograd._observers.append(self._observer)
        return self

    def __exit__(self, *exc):
        autograd._observers.remove(self._observer)
        self._errstate.__exit__(*exc)
        return False

    def _recreate_cm(self):
        return type(self)()
