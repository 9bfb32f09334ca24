"""Module and Parameter: the tree that holds a model's weights, with PyTorch's words.

``Module.__setattr__`` files Parameters and sub-modules into insertion-ordered dicts as they are
assigned, so ``named_parameters()`` walks them in the order they were created and yields dotted
names (``encoder.layers.0.self_attn.q_proj.weight``) that are also the checkpoint keys. There is
no ``__getattr__`` magic: a typo in an attribute name raises AttributeError.
"""
from __future__ import annotations

import contextlib
import math

import numpy

from ..autograd import DEFAULT_DTYPE, Tensor, _as_array
from ..backend import get_array_module, to_device
from .. import serialization

_DEFAULT_RNG = [numpy.random.default_rng(0)]


def manual_seed(seed: int) -> None:
    """Reseed the generator that initializes weights when no ``rng`` is passed to a layer."""
    _DEFAULT_RNG[0] = numpy.random.default_rng(seed)


def default_rng() -> numpy.random.Generator:
    """The generator layers use for their initial weights when they are given none."""
    return _DEFAULT_RNG[0]


def child_rng(rng=None) -> numpy.random.Generator:
    """A new generator seeded from ``rng`` (or the default one): a layer's own random stream."""
    return numpy.random.default_rng((rng or default_rng()).integers(2**63))


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates: ``requires_grad`` is on by default."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class ModuleError(ValueError):
    """A module got input or weights it cannot take; the message lists what and where."""


class Module:
    """Base class of every layer and model.

    Subclasses assign Parameters and Modules as attributes in ``__init__`` (after calling
    ``super().__init__()``) and define ``forward``; calling the module calls ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array, persistent=True):
        """A non-trainable array that moves with ``.to()`` (and is saved when ``persistent``)."""
        self._buffers[name] = array
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, array)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- the tree
    def named_children(self):
        yield from self._modules.items()

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, depth first."""
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) for every parameter, each shared parameter once."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self):
        for mod_name, module in self.named_modules():
            for name, b in module._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self, trainable_only=False) -> int:
        """How many numbers the model learns (shared weights counted once)."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- modes and devices
    def train(self, mode=True):
        """Training mode (dropout active) for this module and all below it; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device):
        """Move every parameter, gradient and buffer to ``device`` ('cpu' or 'cuda'), in place."""
        for p in self.parameters():
            p.data = to_device(p.data, device)
            if p.grad is not None:
                p.grad = to_device(p.grad, device)
        for module in self.modules():
            for name, b in list(module._buffers.items()):
                moved = to_device(b, device)
                module._buffers[name] = moved
                object.__setattr__(module, name, moved)
        return self

    @property
    def device(self) -> str:
        for p in self.parameters():
            return p.device
        return "cpu"

    # ---- state
    def state_dict(self) -> dict:
        """name -> array for every parameter and persistent buffer (tied weights under each name)."""
        out = {}
        for mod_name, module in self.named_modules():
            for name, p in module._parameters.items():
                out[f"{mod_name}.{name}" if mod_name else name] = p.data
            for name, b in module._buffers.items():
                if name not in module._non_persistent:
                    out[f"{mod_name}.{name}" if mod_name else name] = b
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers, checking every name and shape first.

        With ``strict`` (the default), missing and unexpected keys are errors; shapes must always
        match. Nothing is changed unless every check passes. Returns (missing, unexpected).
        """
        own = {}
        for mod_name, module in self.named_modules():
            for name in module._parameters:
                own[f"{mod_name}.{name}" if mod_name else name] = (module, name, True)
            for name in module._buffers:
                if name not in module._non_persistent:
                    own[f"{mod_name}.{name}" if mod_name else name] = (module, name, False)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for key, (module, name, _) in own.items():
            if key in state_dict:
                want = getattr(module, name).shape
                got = tuple(numpy.shape(state_dict[key]))
                if tuple(want) != got:
                    mismatched.append(f"{key}: expected {tuple(want)}, got {got}")
        problems = []
        if mismatched:
            problems.append("shape mismatch: " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise ModuleError(f"{type(self).__name__}.load_state_dict: " + " | ".join(problems))
        for key, (module, name, is_param) in own.items():
            if key not in state_dict:
                continue
            current = getattr(module, name)
            data = current.data if is_param else current
            value = state_dict[key]
            value = value.data if isinstance(value, Tensor) else value
            host = to_device(_as_array(value, None), "cpu")
            value = get_array_module(data).array(host, dtype=data.dtype)  # a copy on data's device
            if is_param:
                current.data = value
            else:
                module._buffers[name] = value
                object.__setattr__(module, name, value)
        return missing, unexpected

    def save(self, path):
        """Write ``state_dict()`` to ``.safetensors`` or ``.npz`` (by suffix), atomically."""
        arrays = {k: to_device(v, "cpu") for k, v in self.state_dict().items()}
        path = str(path)
        if path.endswith(".safetensors"):
            serialization.save_safetensors(path, arrays)
        elif path.endswith(".npz"):
            serialization.save_npz(path, arrays)
        else:
            raise ModuleError(f"{type(self).__name__}.save: unknown file type {path!r}; use .safetensors or .npz")

    def load(self, path, strict=True):
        """Read a file written by ``save`` (never unpickling anything) into this module."""
        path = str(path)
        if path.endswith(".safetensors"):
            arrays = serialization.load_safetensors(path)
        elif path.endswith(".npz"):
            arrays = serialization.load_npz(path)
        else:
            raise ModuleError(f"{type(self).__name__}.load: unknown file type {path!r}; use .safetensors or .npz")
        return self.load_state_dict(arrays, strict=strict)

    # ---- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


@contextlib.contextmanager
def eval_mode(model: Module):
    """Eval mode (dropout off) inside the ``with`` block; every submodule's own training flag is
    restored after, so a model that was partly in eval mode comes back as it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            object.__setattr__(m, "training", training)


class ModuleList(Module):
    """A list of modules, registered under "0", "1", ... so their parameters are found."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b)(x) == b(a(x))``."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


def init_uniform(shape, bound, rng=None, dtype=DEFAULT_DTYPE):
    """Weights drawn from U(-bound, bound): PyTorch's default for Linear layers."""
    rng = rng or default_rng()
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def xavier_uniform_(param, rng=None):
    """Glorot/Xavier uniform init in place: U(±√(6 / (fan_in + fan_out))), as torch's."""
    fan_out, fan_in = param.shape[0], int(numpy.prod(param.shape[1:]))
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    xp = get_array_module(param.data)
    param.data = xp.asarray((rng or default_rng()).uniform(-bound, bound, size=param.shape), dtype=param.dtype)
