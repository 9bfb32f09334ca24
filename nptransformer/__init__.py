"""nptransformer: the Transformer from a tiny reverse-mode autograd in pure NumPy."""
from . import functional
from .anomaly import AnomalyError, detect_anomaly
from .autograd import DEFAULT_DTYPE, Function, OpError, ShapeError, Tensor, is_grad_enabled, no_grad, tensor
from .backend import DeviceError, cupy_available, get_array_module
from .early_stopping import EarlyStopping
from .functional.primitives import concatenate, masked_fill, split, stack, where
from .gradcheck import GradcheckError, gradcheck
from .profiler import profile

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "DEFAULT_DTYPE",
    "DeviceError",
    "EarlyStopping",
    "Function",
    "GradcheckError",
    "OpError",
    "ShapeError",
    "Tensor",
    "concatenate",
    "cupy_available",
    "detect_anomaly",
    "functional",
    "get_array_module",
    "gradcheck",
    "is_grad_enabled",
    "masked_fill",
    "no_grad",
    "profile",
    "split",
    "stack",
    "tensor",
    "where",
]
