"""A strict array namespace for tests: NumPy underneath, but its arrays refuse plain ndarrays.

On a GPU, an op that builds a constant with ``numpy`` instead of its inputs' ``xp`` fails (or
silently copies to the host). On a CPU-only machine that bug is invisible, because ``xp`` *is*
numpy. ``strict`` makes it visible: its arrays are a subclass of ndarray that raise
``MixedArrayError`` whenever a plain ndarray meets them in a ufunc, an array function, an index
or an assignment, and its functions refuse plain ndarrays too, except ``asarray`` / ``array``,
the explicit transfer (like ``cupy.asarray``). Python scalars and NumPy scalars are allowed,
as CuPy allows them.
"""
from __future__ import annotations

import types

import numpy as np


class MixedArrayError(TypeError):
    """A plain NumPy array met a strict array: an op built a constant with the wrong module."""


def _is_plain(x) -> bool:
    return isinstance(x, np.ndarray) and not isinstance(x, StrictArray)


def _check(where, values):
    for v in values:
        if isinstance(v, (list, tuple)):
            _check(where, v)
        elif _is_plain(v):
            raise MixedArrayError(
                f"{where}: a plain numpy array of shape {v.shape} met the strict namespace; "
                "build it with the inputs' array module (xp) instead of numpy"
            )


def _unwrap(x):
    if isinstance(x, StrictArray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x, cls):
    if isinstance(x, np.ndarray):
        return x.view(cls)
    if isinstance(x, np.generic):
        return np.asarray(x).view(cls)
    if isinstance(x, tuple):
        return tuple(_wrap(v, cls) for v in x)
    if isinstance(x, list):
        return [_wrap(v, cls) for v in x]
    return x


class StrictArray(np.ndarray):
    namespace = None  # the _Namespace whose functions make arrays of this class

    def __array_namespace__(self, api_version=None):
        return self.namespace

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check(f"np.{ufunc.__name__}.{method}", inputs)
        if out is not None:
            _check(f"np.{ufunc.__name__} out=", out)
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        return None if method == "at" else _wrap(result, type(self))

    def __array_function__(self, func, types, args, kwargs):
        _check(f"np.{func.__name__}", args)
        _check(f"np.{func.__name__}", tuple(kwargs.values()))
        return _wrap(func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}), type(self))

    def __array_wrap__(self, array, context=None, return_scalar=False):
        return np.asarray(array).view(type(self))

    def __getitem__(self, index):
        _check("indexing", index if isinstance(index, tuple) else (index,))
        return _wrap(super().__getitem__(_unwrap(index)), type(self))

    def __setitem__(self, index, value):
        _check("assignment", (index if isinstance(index, tuple) else (index,)) + (value,))
        super().__setitem__(_unwrap(index), _unwrap(value))


_TRANSFERS = {"asarray", "array", "asanyarray", "ascontiguousarray"}


class _Namespace(types.ModuleType):
    def __init__(self, name, base, array_class):
        super().__init__(name)
        self._base, self._class = base, array_class

    def __getattr__(self, name):
        attr = getattr(self._base, name)
        cls = self._class
        if isinstance(attr, types.ModuleType):
            return _Namespace(f"{self.__name__}.{name}", attr, cls)
        if isinstance(attr, (np.ufunc, type)) or not callable(attr):
            return attr
        if name in _TRANSFERS:
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **{kk: _unwrap(v) for kk, v in k.items()}), cls)

        def strict_function(*args, **kwargs):
            _check(f"strict.{name}", args)
            _check(f"strict.{name}", tuple(kwargs.values()))
            return _wrap(attr(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}), cls)

        return strict_function


def namespace(name: str, array_class: type) -> _Namespace:
    """A strict namespace called ``name`` whose arrays are ``array_class`` (a StrictArray subclass)."""
    ns = _Namespace(name, np, array_class)
    array_class.namespace = ns
    return ns


strict = namespace("strict_numpy", StrictArray)
