"""Array dispatch: one place picks the module, ops never reach plain NumPy behind its back."""
import numpy as np
import pytest

import nptransformer as nt
from nptransformer.backend import DeviceError, cupy_available, device_of, get_array_module
from strict_xp import MixedArrayError, strict


def test_get_array_module():
    assert get_array_module(np.ones(2), 3.0, None) is np
    assert get_array_module() is np
    assert get_array_module(strict.ones(2), 1) is strict
    with pytest.raises(DeviceError, match="different devices"):
        get_array_module(np.ones(2), strict.ones(2))


def test_strict_namespace_refuses_plain_numpy():
    a = strict.ones(3)
    with pytest.raises(MixedArrayError):
        a * np.ones(3)
    with pytest.raises(MixedArrayError):
        strict.where(np.ones(3) > 0, a, a)
    with pytest.raises(MixedArrayError):
        a[np.array([0, 1])]
    assert isinstance(a * 2.0 + np.float32(1), type(a))  # scalars are fine, as in CuPy
    assert isinstance(strict.asarray(np.ones(2)), type(a))  # the explicit transfer is allowed


class NumpyMaskBug(nt.Function):
    """The classic GPU bug: a mask built with numpy instead of the input's xp."""

    @staticmethod
    def forward(ctx, x):
        mask = np.arange(x.shape[-1]) % 2 == 0
        return x * mask

    @staticmethod
    def backward(ctx, dout):
        return dout


def test_strict_backend_exposes_an_op_that_builds_constants_with_numpy():
    NumpyMaskBug.apply(nt.Tensor(np.ones(4)))  # invisible on a CPU with plain numpy...
    with pytest.raises(nt.OpError, match=r"numpymaskbug: .*plain numpy array.*\[in forward, .*test_backend.py:\d+\]"):
        NumpyMaskBug.apply(nt.Tensor(strict.ones(4)))  # ...caught by the strict namespace, and located


def test_mixing_devices_in_an_op_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"\.to\('cpu'\)"):
        nt.Tensor(np.ones(3)) + nt.Tensor(strict.ones(3))


def test_tensor_device_and_to_cpu_is_identity():
    t = nt.Tensor(np.ones(2), requires_grad=True)
    assert t.device == "cpu" and device_of(t.data) == "cpu"
    assert t.to("cpu") is t
    with pytest.raises(DeviceError, match="unknown device"):
        nt.Tensor(np.ones(2)).to("tpu")


@pytest.mark.skipif(cupy_available(), reason="checks the message on a machine without a usable GPU")
def test_to_cuda_without_gpu_says_why():
    with pytest.raises(DeviceError, match="'cuda' is not usable here"):
        nt.Tensor(np.ones(2)).to("cuda")


@pytest.mark.cupy
@pytest.mark.skipif(not cupy_available(), reason="no usable GPU")
def test_to_cuda_and_back_is_differentiable():
    x = nt.Tensor(np.arange(3.0), requires_grad=True)
    y = (x.to("cuda") * 2.0).exp()
    assert y.device == "cuda"
    y.to("cpu").sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * np.arange(3.0)), rtol=1e-12)
