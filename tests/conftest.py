"""Shared fixtures: the array backends every op test runs on, and PyTorch for parity checks."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import settings

from nptransformer.backend import cupy_available
from strict_xp import strict

settings.register_profile("default", deadline=None, max_examples=40)
settings.load_profile("default")


def _backend_params():
    params = [pytest.param("numpy", id="numpy"), pytest.param("strict", id="strict")]
    if cupy_available():
        params.append(pytest.param("cupy", id="cupy", marks=pytest.mark.cupy))
    return params


def backend_module(name):
    if name == "numpy":
        return np
    if name == "strict":
        return strict
    import cupy

    return cupy


@pytest.fixture(params=_backend_params())
def xp(request):
    """The array module a test runs on: numpy, the strict test namespace, and cupy on a GPU.

    Build inputs with ``xp.asarray(numpy_array)`` and read results with ``tensor.numpy()``.
    """
    return backend_module(request.param)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, or skip: parity tests run only where torch is installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """CuPy replaced, for one test, by the stand-in of ``fake_cupy``: the package's 'cuda' paths
    (``model.to("cuda")``, the trainer, decoding, the benchmark) run on the CPU with arrays that
    refuse to meet NumPy's, whether or not this machine has a GPU."""
    from fake_cupy import cupy
    from nptransformer import backend

    monkeypatch.setitem(sys.modules, "cupy", cupy)
    backend._probe_cupy.cache_clear()
    yield cupy
    backend._probe_cupy.cache_clear()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
