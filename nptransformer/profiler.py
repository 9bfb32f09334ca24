"""Where the time and the memory of a forward and backward pass go, op by op.

    with nptransformer.profile():
        loss = F.cross_entropy(model(x), y)
        loss.backward()

prints, when the block ends, one row per op (``linear``, ``scaled_dot_product_attention``, ...):
how often it ran, its milliseconds in the forward and in the backward, the floating-point
operations of its matrix products, the size of its outputs ("out"), and the memory its graph node
keeps for the backward ("saved": each buffer counted once, at the first op that keeps it, so the
column adds up to what the graph holds). Run it at two context lengths and the
attention row shows why attention costs T²: its FLOPs grow four-fold when T doubles, and with
``memory=True`` its peak nearly so, the (B, H, T, T) attention weights and their gradient that
its backward holds (docs/benchmarks.md, "Profile"). The line above the table says how much of
the block's wall time was spent outside the ops (Python between ops, the engine's bookkeeping,
the optimizer).

How: the engine (``nptransformer.autograd``) calls every object in its ``_observers`` list just
before and just after each op's forward and backward; ``profile`` adds one for the length of the
``with``. Without a profile the engine pays one truth test per op. Timing an op costs about a
microsecond, small beside the 5 to 50 microseconds even a small op takes. The engine's list
is shared by all threads: ops that other threads run meanwhile are counted too.

FLOPs are counted for the ops that multiply matrices (``matmul``, ``linear`` and
``scaled_dot_product_attention``): 2·k per output element of a product with k terms (a multiply
and an add). The elementwise ops are not counted: they do few FLOPs per byte they read, and their
time is the memory traffic. With ``memory=True`` the profile also traces allocations
(``tracemalloc``, which sees every NumPy array) and reports, per op, the highest memory an op's
call reached above the memory at its start ("peak MB", its temporaries included), and the highest
memory of the whole block. Tracing makes every allocation slower, so the times are then a little
higher; take times from a profile without it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import tracemalloc
import weakref

import numpy

from . import autograd
from .functional.attention import ScaledDotProductAttention
from .functional.linear import Linear
from .functional.primitives import MatMul

__all__ = ["OpStats", "profile", "matmul_flops"]


# --------------------------------------------------------------------------- FLOPs
def _product_flops(a_shape, b_shape):
    """2·k·(number of output elements) for ``a @ b`` with NumPy's matmul rules (1-D and broadcast)."""
    a2 = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)  # (k,) -> (1, k)
    b2 = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)  # (k,) -> (k, 1)
    batch = numpy.broadcast_shapes(a2[:-2], b2[:-2])
    n, k, m = a2[-2], a2[-1], b2[-1]
    return 2 * int(numpy.prod(batch, dtype=numpy.int64)) * n * k * m


def _matmul(inputs, needs):
    """a @ b: the forward is one product; each gradient (da = dout bᵀ, db = aᵀ dout) is one more
    of the same size."""
    flops = _product_flops(inputs[0].shape, inputs[1].shape)
    return flops, flops * (needs[0] + needs[1])


def _linear(inputs, needs):
    """x Wᵀ with x (..., in), W (out, in): rows·in·out multiply-adds, again for dx and for dW."""
    x, weight = inputs[0], inputs[1]
    flops = 2 * (x.size // weight.shape[1]) * weight.shape[1] * weight.shape[0]
    return flops, flops * (needs[0] + needs[1])


def _attention(inputs, needs):
    """Q Kᵀ (T·S·D per head) and P V (T·S·Dv) forward; dV = Pᵀ dO and dP = dO Vᵀ (T·S·Dv each),
    dQ = dZ K and dK = dZᵀ Q (T·S·D each) backward."""
    q, k, v = inputs[0], inputs[1], inputs[2]
    heads = int(numpy.prod(q.shape[:-2], dtype=numpy.int64))  # every leading axis: batch x heads
    t, s, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    qk, pv = 2 * heads * t * s * d, 2 * heads * t * s * dv
    need_q, need_k, need_v = needs[0], needs[1], needs[2]
    need_scores = need_q or need_k or (len(needs) > 3 and needs[3])  # dZ, for dQ, dK or a float mask
    backward = pv * need_v + pv * need_scores + qk * need_q + qk * need_k
    return qk + pv, backward


# The ops that multiply matrices, and their (forward, backward) FLOPs. Each function reads the
# shapes of the op's first inputs, which are also the first arrays its forward saves, so the same
# function serves the forward (given the inputs) and the backward (given ctx.saved).
_FLOPS = {MatMul: _matmul, Linear: _linear, ScaledDotProductAttention: _attention}


def matmul_flops(fn, inputs, needs_input_grad) -> tuple[int, int]:
    """(forward, backward) floating-point operations of the matrix products of op ``fn`` (a
    Function class) on ``inputs`` (arrays), when the inputs flagged in ``needs_input_grad`` take a
    gradient; (0, 0) for ops without a matrix product."""
    count = _FLOPS.get(fn)
    return (0, 0) if count is None else count(inputs, needs_input_grad)


# --------------------------------------------------------------------------- the observer
@dataclasses.dataclass
class OpStats:
    """What a profile measured for one op (summed over its calls)."""

    calls: int = 0
    forward_s: float = 0.0
    backward_s: float = 0.0
    forward_flops: int = 0
    backward_flops: int = 0
    out_bytes: int = 0  # the op's outputs (activations), whether or not anything keeps them
    saved_bytes: int = 0  # arrays its graph node keeps for the backward that no earlier op keeps
    peak_bytes: int = 0  # memory=True: the most an op's call allocated above its start

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s

    @property
    def flops(self) -> int:
        return self.forward_flops + self.backward_flops


def _owner(array):
    """The array that owns ``array``'s memory (``array`` itself unless it is a view)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _new_saved_bytes(ctx, kept) -> int:
    """Bytes of the arrays ``ctx`` saved for its backward whose memory is not in ``kept`` yet.

    ``kept`` maps ``id(owner)`` to the owning array, weakly: an array freed since no longer
    counts as kept, and its id may be reused. Views count as the memory they belong to.
    """
    total = 0
    for a in getattr(ctx, "saved", ()):
        if not hasattr(a, "nbytes"):
            continue
        owner = _owner(a)
        if kept.get(id(owner)) is owner:
            continue
        try:
            kept[id(owner)] = owner
        except TypeError:  # an array type without weak references: counted at every op that saves it
            pass
        total += owner.nbytes
    return total


class profile(contextlib.ContextDecorator):
    """Time (and FLOPs, and memory) of every op run inside, summed per op; a table when done.

    ``with profile() as prof: ...`` or ``@profile()`` on a function. On exit the table is printed
    to ``file`` (stdout by default; ``print_table=False`` for none); afterwards ``prof.stats``
    maps each op's name to its ``OpStats``, ``prof.table()`` gives the table again,
    ``prof.total_flops`` is the FLOPs of every matrix product, ``prof.wall_s`` the block's
    seconds. ``memory=True`` adds tracemalloc's per-op and whole-block peaks (see the module
    docstring). The module docstring says how it works and what each column means.
    """

    def __init__(self, memory=False, print_table=True, file=None, sort_by="total"):
        if sort_by not in ("total", "forward", "backward", "flops", "calls", "saved"):
            raise ValueError(f"profile: unknown sort_by={sort_by!r}; expected total, forward, backward, flops, calls or saved")
        self.memory, self.print_table, self.file, self.sort_by = memory, print_table, file, sort_by
        self.stats: dict[str, OpStats] = {}
        self.wall_s = 0.0
        self.peak_bytes = 0  # memory=True: the block's highest traced memory above its start
        self._starts: list = []

    # ---- the context
    def __enter__(self):
        self.stats, self._starts, self.peak_bytes = {}, [], 0
        self._kept = weakref.WeakValueDictionary()  # the buffers that graph nodes keep, by id
        self._started_tracing = self.memory and not tracemalloc.is_tracing()
        if self._started_tracing:
            tracemalloc.start()
        if self.memory:
            self._block_start = tracemalloc.get_traced_memory()[0]
        autograd._observers.append(self)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self._t0
        autograd._observers.remove(self)
        if self.memory:
            self._fold_peak()
            if self._started_tracing:
                tracemalloc.stop()
        if self.print_table and exc[0] is None:
            print(self.table(), file=self.file or sys.stdout)
        return False

    def _recreate_cm(self):
        return type(self)(self.memory, self.print_table, self.file, self.sort_by)

    # ---- the engine's calls
    def _op(self, fn) -> OpStats:
        name = fn.op_name()
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = OpStats()
        return stats

    def _fold_peak(self):
        """Fold tracemalloc's peak since the last reset into the block's peak, and reset it."""
        self.peak_bytes = max(self.peak_bytes, tracemalloc.get_traced_memory()[1] - self._block_start)
        tracemalloc.reset_peak()

    def _start(self):
        if self.memory:
            self._fold_peak()
            self._starts.append((time.perf_counter(), tracemalloc.get_traced_memory()[0]))
        else:
            self._starts.append((time.perf_counter(), 0))

    def _stop(self, stats):
        t0, memory0 = self._starts.pop()
        elapsed = time.perf_counter() - t0
        if self.memory:
            stats.peak_bytes = max(stats.peak_bytes, tracemalloc.get_traced_memory()[1] - memory0)
        return elapsed

    def before_forward(self, fn, ctx, arrays):
        self._start()

    def forward(self, fn, ctx, arrays, out):
        stats = self._op(fn)
        stats.forward_s += self._stop(stats)
        stats.calls += 1
        stats.forward_flops += matmul_flops(fn, arrays, ctx.needs_input_grad)[0]
        stats.out_bytes += getattr(out, "nbytes", 0)
        if autograd.is_grad_enabled() and True in ctx.needs_input_grad:  # the graph keeps this node
            stats.saved_bytes += _new_saved_bytes(ctx, self._kept)

    def before_backward(self, ctx, dout):
        self._start()

    def backward(self, ctx, dout, grads):
        stats = self._op(ctx.fn)
        stats.backward_s += self._stop(stats)
        stats.backward_flops += matmul_flops(ctx.fn, getattr(ctx, "saved", ()), ctx.needs_input_grad)[1]

    # ---- results
    @property
    def total_flops(self) -> int:
        """FLOPs of every matrix product run inside, forward and backward."""
        return sum(s.flops for s in self.stats.values())

    @property
    def op_s(self) -> float:
        """Seconds spent inside ops (forward and backward)."""
        return sum(s.total_s for s in self.stats.values())

    def table(self) -> str:
        """The profile as a text table, one row per op, the costliest first."""
        key = {"total": lambda s: s.total_s, "forward": lambda s: s.forward_s, "backward": lambda s: s.backward_s,
               "flops": lambda s: s.flops, "calls": lambda s: s.calls, "saved": lambda s: s.saved_bytes}[self.sort_by]
        rows = sorted(self.stats.items(), key=lambda item: key(item[1]), reverse=True)
        wall_ms, op_ms = self.wall_s * 1e3, self.op_s * 1e3
        calls = sum(s.calls for s in self.stats.values())
        share = op_ms / wall_ms if wall_ms else 0.0
        lines = [
            f"profile: {calls} op calls in {wall_ms:.2f} ms; inside ops {op_ms:.2f} ms ({share:.0%}), "
            f"the rest ({wall_ms - op_ms:.2f} ms) is Python between ops, the engine and code outside the ops"
        ]
        header = f"{'op':<30} {'calls':>6} {'fwd ms':>9} {'bwd ms':>9} {'% ops':>6} {'GFLOP':>8} {'GFLOP/s':>8} {'out MB':>8} {'saved MB':>9}"
        if self.memory:
            header += f" {'peak MB':>8}"
        lines += [header, "-" * len(header)]
        for name, s in rows + [("total", self._total())]:
            rate = f"{s.flops / s.total_s / 1e9:8.2f}" if s.flops and s.total_s else f"{'':8}"
            line = (f"{name:<30} {s.calls:>6} {s.forward_s * 1e3:>9.2f} {s.backward_s * 1e3:>9.2f} "
                    f"{s.total_s / self.op_s if self.op_s else 0:>6.1%} {s.flops / 1e9:>8.3f} {rate} "
                    f"{s.out_bytes / 2**20:>8.2f} {s.saved_bytes / 2**20:>9.2f}")
            if self.memory:
                line += f" {s.peak_bytes / 2**20:>8.2f}"
            if name == "total":
                lines.append("-" * len(header))
            lines.append(line)
        if self.memory:
            lines.append(f"peak traced memory of the block: {self.peak_bytes / 2**20:.2f} MB above its start")
        return "\n".join(lines)

    def _total(self) -> OpStats:
        total = OpStats()
        for s in self.stats.values():
            for field in dataclasses.fields(OpStats):
                if field.name != "peak_bytes":
                    setattr(total, field.name, getattr(total, field.name) + getattr(s, field.name))
            total.peak_bytes = max(total.peak_bytes, s.peak_bytes)
        return total
