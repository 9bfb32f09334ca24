"""The one place that decides which array module runs: NumPy by default, CuPy on a GPU.

Every op asks ``get_array_module(*arrays)`` for ``xp`` and builds its constants (masks,
ranges, zeros) with that ``xp``, never with ``numpy`` directly: a NumPy mask multiplied into a
CuPy array is the bug NumPy/CuPy learners hit most.

Nothing here imports CuPy at module import time. ``cupy_available()`` imports it on first use
and checks that a GPU really answers, because ``import cupy`` can succeed on a machine with no
GPU and then fail at the first array.
"""
from __future__ import annotations

import functools

import numpy

DEVICES = ("cpu", "cuda")


class DeviceError(RuntimeError):
    """Arrays from different devices (array modules) met in one op, or a device is missing."""


@functools.lru_cache(maxsize=1)
def _probe_cupy():
    """Return (cupy module or None, reason it is unusable or None)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        return None, f"CuPy is not installed or failed to import ({exc.__class__.__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy imported, but no CUDA device is visible"
        (cupy.arange(3, dtype=cupy.float32) * 2).sum().item()
    except Exception as exc:
        return None, f"CuPy imported, but a GPU array failed ({exc.__class__.__name__}: {exc})"
    return cupy, None


def cupy_available() -> bool:
    """True when CuPy is installed *and* a GPU can run an array op."""
    return _probe_cupy()[0] is not None


def get_cupy():
    """The CuPy module, or a DeviceError that says why it cannot be used."""
    cupy, reason = _probe_cupy()
    if cupy is None:
        raise DeviceError(f"device 'cuda' is not usable here: {reason}")
    return cupy


def _namespace_of(a):
    """Array module of one array-like; None for Python scalars and other non-arrays."""
    if isinstance(a, (numpy.ndarray, numpy.generic)) and type(a).__module__ == "numpy":
        return numpy
    module = type(a).__module__
    if module.startswith("cupy"):
        return get_cupy()
    ns = getattr(a, "__array_namespace__", None)
    if ns is not None:
        return ns()
    return None


def get_array_module(*arrays):
    """The array module (``numpy`` or ``cupy``, or a test namespace) that the arrays live in.

    Python scalars and None are ignored. Arrays from two different modules raise a DeviceError
    naming both, instead of letting one silently convert the other.
    """
    found = None
    for a in arrays:
        if a is None:
            continue
        ns = numpy if type(a) is numpy.ndarray else _namespace_of(a)  # the common case, without the lookup
        if ns is None:
            continue
        if found is None:
            found = ns
        elif ns is not found:
            raise DeviceError(
                f"arrays from different devices met in one op: {_device_name(found)} and "
                f"{_device_name(ns)}; move them to one device first with .to('cpu') or .to('cuda')"
            )
    return numpy if found is None else found


def _device_name(xp) -> str:
    if xp is numpy:
        return "cpu (numpy)"
    if xp.__name__.startswith("cupy"):
        return "cuda (cupy)"
    return f"'{xp.__name__}'"


def device_of(array) -> str:
    """'cpu' or 'cuda' for an array; other namespaces report their module name."""
    xp = get_array_module(array)
    if xp is numpy:
        return "cpu"
    if xp.__name__.startswith("cupy"):
        return "cuda"
    return xp.__name__


def to_device(array, device: str):
    """Copy ``array`` to ``device`` ('cpu' or 'cuda'); a no-op when it is already there."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected one of {DEVICES}")
    if device_of(array) == device:
        return array
    if device == "cuda":
        return get_cupy().asarray(array)
    xp = get_array_module(array)
    if hasattr(xp, "asnumpy"):
        return xp.asnumpy(array)
    return numpy.asarray(array)
