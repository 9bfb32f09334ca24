"""A stand-in for CuPy on a machine without a GPU, to run the package's 'cuda' paths end to end.

It is the strict namespace of ``strict_xp`` under CuPy's name: its arrays say they come from the
module ``cupy`` (which is how the backend recognises CuPy arrays) and refuse to meet plain NumPy
arrays, as CuPy's do; ``asnumpy`` is the transfer back, and ``cuda`` holds the few runtime calls
the package makes (the device count and name, waiting for the stream). The arithmetic is
NumPy's, on the CPU: what it tests is that every array of a model, a training step, a decoding
loop and the benchmark stays on the device, never the GPU's speed or its rounding.
"""
from __future__ import annotations

import types

import numpy as np

from strict_xp import StrictArray, namespace


class FakeCupyArray(StrictArray):
    """An array 'on the GPU'."""


FakeCupyArray.__module__ = "cupy._stand_in"

cupy = namespace("cupy", FakeCupyArray)
cupy.__version__ = "stand-in (NumPy)"
cupy.asnumpy = lambda a: np.array(a.view(np.ndarray) if isinstance(a, np.ndarray) else a)


class _Stream:
    def synchronize(self):
        pass


class _Device:
    id = 0

    def synchronize(self):
        pass


cupy.cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                  getDeviceProperties=lambda i: {"name": b"stand-in GPU (NumPy on the CPU)"}),
    Device=_Device,
    get_current_stream=_Stream,
)
