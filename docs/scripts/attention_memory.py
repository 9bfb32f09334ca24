"""Peak memory and time of fused attention vs its composed twin, forward + backward.

    python docs/scripts/attention_memory.py              # B=8, H=8, T=S=256, D=64, float32
    python docs/scripts/attention_memory.py --repeats 21

Peak memory comes from ``tracemalloc``: NumPy reports every array buffer it allocates to it, so
the peak is the most array memory alive at once during one forward + backward (the q, k, v inputs
and the upstream gradient exist before and are not counted; the three input gradients are).
Time is measured with tracemalloc off, after one warm-up run of each, running the fused op and
the twin alternately so that both see the same load on a shared machine; the table gives the
median and the minimum of each, and the median of the per-pair ratios.
The results are pasted in docs/derivations/attention.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import tracemalloc

import numpy

from nptransformer import Tensor
from nptransformer.functional import scaled_dot_product_attention
from nptransformer.functional.attention import attention_from_primitives


def make_inputs(b=8, h=8, t=256, s=256, d=64, seed=0):
    """float32 q (B, H, T, D), k and v (B, H, S, D), and an upstream gradient (B, H, T, D)."""
    rng = numpy.random.default_rng(seed)
    return [rng.standard_normal((b, h, n, d), dtype=numpy.float32) for n in (t, s, s, t)]


def step(fn, inputs, **kwargs):
    """One forward + backward of ``fn`` on fresh leaves; dropout draws from a fixed seed."""
    q, k, v, upstream = inputs
    leaves = [Tensor(x, requires_grad=True) for x in (q, k, v)]
    fn(*leaves, rng=numpy.random.default_rng(0), **kwargs).backward(upstream)


def peak_mib(fn, inputs, **kwargs) -> float:
    """The most array memory (MiB) alive at once during one forward + backward of ``fn``."""
    step(fn, inputs, **kwargs)  # warm-up, outside the trace
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    step(fn, inputs, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2**20


def times_ms(fns, inputs, repeats, **kwargs) -> list:
    """For each of ``fns``, ``repeats`` wall times (ms) of forward + backward, taken alternately."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            step(fn, inputs, **kwargs)
            record.append(1e3 * (time.perf_counter() - start))
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    b, h, t, s, d = 8, 8, 256, 256, 64
    inputs = make_inputs(b, h, t, s, d)
    blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, "
          f"NumPy {numpy.__version__} with {blas['name']} {blas.get('version', '')}")
    print(f"shape: B={b}, H={h}, T={t}, S={s}, D={d}, float32; one (B, H, T, S) array is "
          f"{b * h * t * s * 4 / 2**20:.0f} MiB; {args.repeats} alternating runs")
    print()
    print("| case | peak MiB, fused | peak MiB, composed | ms, fused (median / min) | ms, composed (median / min) |"
          " memory saved | speed-up (median of ratios) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    cases = {"no mask": {}, "is_causal": {"is_causal": True}, "is_causal, dropout 0.1": {"is_causal": True, "dropout_p": 0.1}}
    fns = (scaled_dot_product_attention, attention_from_primitives)
    for name, kwargs in cases.items():
        fused_mib, composed_mib = (peak_mib(fn, inputs, **kwargs) for fn in fns)
        fused, composed = times_ms(fns, inputs, args.repeats, **kwargs)
        ratio = statistics.median(c / f for f, c in zip(fused, composed))
        print(f"| {name} | {fused_mib:.0f} | {composed_mib:.0f} | "
              f"{statistics.median(fused):.0f} / {min(fused):.0f} | {statistics.median(composed):.0f} / {min(composed):.0f} | "
              f"{composed_mib / fused_mib:.1f}x | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
