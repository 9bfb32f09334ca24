# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Efficiency and the GPU
#
# *Source: §8.2.1 "Compute resources and training cost" and §9.5 "How to train LLMs efficiently
# on GPUs", with the platforms of §7.4 (PyTorch, cloud GPUs) and the update step of §3.3.3.*
# The source names these topics without working them; here every claim is measured on the
# package, live, on whatever machine runs the notebook.
#
# ## What you will learn
#
# - **Where the time goes** in a GPT training step, op by op, with `nptransformer.profile()`:
#   the matrix products hold almost all the FLOPs, the elementwise ops a share of the time.
# - **Why attention costs $T^2$**: its FLOPs, time and memory against the context length, alone
#   and inside a GPT whose number of tokens per step stays fixed.
# - **Counting FLOPs by hand**: the $6 \cdot N \cdot \text{tokens}$ rule and the attention term,
#   checked against the profiler; the achieved GFLOP/s against the matrix-multiply peak of this
#   machine, and what the same rule says a GPT-3-sized run costs.
# - **Fused against composed** ops: attention and layer norm written as one op with a
#   hand-derived backward use less memory first, and less time second.
# - **Training levers** this package has: float32 against float64, the batch size, gradient
#   accumulation and clipping, and the **KV cache** for decoding.
# - **The GPU**: how the same code runs on NumPy or CuPy through one dispatch function, and what
#   it says when a device is missing or two devices meet.

# %%
import gc
import inspect
import statistics
import time
import types
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np

import nptransformer as nt
from nptransformer import Tensor, bench, profile
from nptransformer import functional as F
from nptransformer.backend import DeviceError, cupy_available, device_of, get_array_module, get_cupy
from nptransformer.functional.attention import attention_from_primitives
from nptransformer.functional.softmax import Softmax
from nptransformer.nn import GPT, manual_seed
from nptransformer.optim import clip_grad_norm_

manual_seed(0)
try:
    threads = f"1 BLAS thread (set by {bench.set_threads(1)})"
except RuntimeError:  # no threadpoolctl and OPENBLAS_NUM_THREADS unset: BLAS keeps its own count
    threads = f"{bench.blas_threads() or 'the default number of'} BLAS threads (install threadpoolctl to set them)"
print(f"numpy {np.__version__}, {threads}")


def median_ms(*works, repeats=5, warmup=1):
    """Median milliseconds of each no-argument function in ``works``, run in turns (bench.alternate)
    so that all of them see the same load on a shared machine."""
    return [1e3 * statistics.median(seconds) for seconds in bench.alternate(works, lambda work: work(), repeats, warmup)]


# %% [markdown]
# Timings on a shared machine move from run to run. Every time below is the **median** of a few
# runs (except in one picture of millisecond-long steps, section 5, which keeps the fastest), and
# when two things are compared they run in turns (`bench.alternate`), so that both see the same
# load; read the ratios more than the milliseconds.
#
# ## 1. Where the time goes
#
# The benchmark of the package (`nptransformer/bench.py`, results in `docs/benchmarks.md`)
# defines a few GPT sizes. Size **S** is a GPT with vocabulary 256, $C = 128$ (`d_model`), 2
# layers, 4 heads, context $T = 64$ and batch $B = 32$: 2,048 tokens per step. `OursRunner`
# holds the model, an AdamW optimizer and one fixed batch; `train_step()` is zero_grad, forward,
# cross-entropy, backward and the AdamW update. `profile()` times every op inside its block, in
# the forward and in the backward, and counts the FLOPs of the matrix products from their shapes.

# %%
SIZE = bench.SIZES["S"]
runner = bench.OursRunner(SIZE)
runner.train_step()  # warm-up: first calls allocate and fill caches
with profile() as prof:
    runner.train_step()

# %% [markdown]
# Read the first line: almost all of the wall time is spent *inside* ops; Python between them,
# the engine's bookkeeping and the optimizer are the rest. Then the rows, as a picture:

# %%
names = sorted(prof.stats, key=lambda name: prof.stats[name].total_s)  # the costliest at the top
forward_ms = [prof.stats[n].forward_s * 1e3 for n in names]
backward_ms = [prof.stats[n].backward_s * 1e3 for n in names]
fig, ax = plt.subplots(figsize=(8, 3.6))
ax.barh(names, forward_ms, label="forward")
ax.barh(names, backward_ms, left=forward_ms, label="backward")
ax.set_xlabel("ms in one training step")
ax.set_title(f"GPT size S, one training step ({prof.wall_s * 1e3:.0f} ms wall)")
ax.legend()
plt.show()

matmul_ops = [n for n, s in prof.stats.items() if s.flops]
share_time = sum(prof.stats[n].total_s for n in matmul_ops) / prof.op_s
print(f"ops with matrix products ({', '.join(matmul_ops)}): all {prof.total_flops / 1e9:.2f} GFLOP, "
      f"{share_time:.0%} of the time inside ops")
for name in matmul_ops:
    s = prof.stats[name]
    print(f"  {name:<30} {s.flops / s.total_s / 1e9:6.1f} GFLOP/s")

# %% [markdown]
# Two lessons a profile teaches at once. The `linear` layers do most of the arithmetic and run at
# a respectable rate, because a matrix product reads each number once and uses it many times.
# The ops without a product (GELU, layer norm, the residual `add`, the loss) do no counted FLOPs
# at all, yet take a good share of the time: each reads and writes whole activations, often
# several times (the exact GELU evaluates a long formula for erf, array by array), and that
# memory traffic, not the counted arithmetic, is their cost. That is why fused kernels (section 4) matter, on a
# CPU and even more on a GPU, where the arithmetic is much faster and memory is the bottleneck.
#
# ## 2. Why attention costs $T^2$
#
# Attention multiplies $Q K^\top$, a $(T, D) \times (D, S)$ product per head, and $P V$, a
# $(T, S) \times (S, D)$ one; in self-attention $S = T$. Both are $T \cdot T \cdot D$ multiply-adds
# per head, and the weights $P$ are a $(B, H, T, T)$ array. Doubling $T$ should multiply the
# FLOPs by 4, the time by about 4, and the memory of $P$ by 4. Below: the fused
# `scaled_dot_product_attention`, causal, forward and backward, at $B = 4$, $H = 4$, $D = 32$,
# float32. The profiler gives the FLOPs and, with `memory=True`, the peak memory of the block
# (tracemalloc sees every NumPy array); times come from runs without tracing.

# %%
def attention_step(fn, q, k, v, dout, **kwargs):
    """One forward + backward of attention ``fn`` on fresh leaves made from arrays q, k, v."""
    leaves = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    fn(*leaves, **kwargs).backward(dout)


def qkv(b, h, t, d, seed=0):
    """float32 q, k, v and an upstream gradient, each (B, H, T, D)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, h, t, d), dtype=np.float32) for _ in range(4)]


lengths = [64, 128, 256, 512]
flops, times, peaks = [], [], []
for T in lengths:
    arrays = qkv(4, 4, T, 32)
    with profile(memory=True, print_table=False) as block:
        attention_step(F.scaled_dot_product_attention, *arrays, is_causal=True)
    flops.append(block.total_flops / 1e9)
    peaks.append(block.peak_bytes / 2**20)
    times.append(median_ms(lambda: attention_step(F.scaled_dot_product_attention, *arrays, is_causal=True))[0])

print(f"{'T':>5} {'GFLOP':>8} {'ms fwd+bwd':>11} {'peak MiB':>9}   growth when T doubles: FLOPs, time, memory")
for i, T in enumerate(lengths):
    growth = "" if i == 0 else f"   x{flops[i] / flops[i - 1]:.1f}, x{times[i] / times[i - 1]:.1f}, x{peaks[i] / peaks[i - 1]:.1f}"
    print(f"{T:>5} {flops[i]:>8.3f} {times[i]:>11.1f} {peaks[i]:>9.1f}{growth}")

fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, values, label in zip(axes, (flops, times, peaks), ("GFLOP (profiler)", "ms, forward + backward", "peak MiB (tracemalloc)")):
    ax.loglog(lengths, values, "o-", label="measured")
    ax.loglog(lengths, [values[-1] * (T / lengths[-1]) ** 2 for T in lengths], "k:", label="∝ T²")
    ax.set_xticks(lengths, [str(T) for T in lengths])
    ax.minorticks_off()
    ax.set_xlabel("context length T")
    ax.set_title(label)
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The FLOPs follow $T^2$ exactly: they are counted from the shapes. The time follows it once the
# arrays are large enough for the arithmetic to outweigh the fixed cost of a call (and it can
# grow faster than 4× at a step where the $(B, H, T, T)$ arrays stop fitting in the processor's
# cache). The memory grows a little less than 4×, because q, k, v and their gradients grow
# only 2×; the $(B, H, T, T)$ arrays of the backward (the rebuilt $P$ and its gradient) dominate
# as $T$ grows. This is the cost that limits the context length of real models, and what
# FlashAttention-style kernels attack: they never store a whole $(T, T)$ array.
#
# Inside a whole model the $T^2$ term competes with the projections and the feed-forward, whose
# cost is linear in the number of tokens. Keep the tokens per step fixed at $B \cdot T = 2048$ and
# make the sequences longer: the linear layers do the same work, attention does more.

# %%
rows = []
for T in (64, 256, 1024):
    size = replace(SIZE, context=T, batch=2048 // T)
    long_runner = bench.OursRunner(size)
    with profile(print_table=False) as block:
        long_runner.train_step()
    linear_ms = block.stats["linear"].total_s * 1e3
    attention_ms = block.stats["scaled_dot_product_attention"].total_s * 1e3
    rows.append((T, size.batch, linear_ms, attention_ms, block.op_s * 1e3 - linear_ms - attention_ms,
                 block.stats["scaled_dot_product_attention"].flops / block.total_flops))

print(f"{'T':>5} {'B':>3} {'linear ms':>10} {'attention ms':>13} {'other ms':>9} {'attention share of FLOPs':>25}")
for T, B, lin, att, other, share in rows:
    print(f"{T:>5} {B:>3} {lin:>10.1f} {att:>13.1f} {other:>9.1f} {share:>25.0%}")

fig, ax = plt.subplots(figsize=(6.5, 3))
labels = [f"T={T}, B={B}" for T, B, *_ in rows]
bottom = np.zeros(len(rows))
for i, part in enumerate(("linear", "attention", "other ops")):
    values = np.array([row[2 + i] for row in rows])
    ax.barh(labels, values, left=bottom, label=part)
    bottom += values
ax.set_xlabel("ms inside ops, one training step of 2,048 tokens")
ax.legend()
plt.show()

# %% [markdown]
# The linear layers see the same 2,048 tokens at every length, so their time stays put; the
# attention's grows with $T$, because each token now attends to $T$ others. Section 3 turns this
# into a rule of thumb: attention's FLOPs overtake the projections' near $T = 6C$, here 768.

# %% [markdown]
# ## 3. Counting FLOPs by hand
#
# A matrix product $(n, k) \times (k, m)$ does $n \cdot m$ dot products of $k$ terms: $2 \cdot n
# \cdot k \cdot m$ FLOPs (a multiply and an add per term). Push one token through a weight matrix
# of $k \times m$ entries and it costs $2 k m$ FLOPs, **2 per weight**. The backward computes two
# products of the same size for every forward product (the gradient of the input and of the
# weight), so a training step costs **6 FLOPs per weight per token**:
#
# $$\text{FLOPs}_\text{step} \approx 6 \cdot N \cdot \text{tokens}, \qquad N = \underbrace{12 L C^2}_{\text{q, k, v, out: } 4C^2;\ \text{feed-forward: } 8C^2} + \underbrace{C V}_{\text{head}},$$
#
# where $N$ counts the weights that multiply (not the embeddings' rows, which are looked up, nor
# biases and layer-norm scales). Attention adds what no weight accounts for: per token and layer
# $Q K^\top$ and $P V$ each cost $2 \cdot T \cdot C$ in the forward, so $3 \cdot 4 L T C$ per
# token in a step. The ratio of the two terms is about $2 L T C / (12 L C^2) = T / (6C)$: attention
# FLOPs overtake the projections only when the context is longer than six times the width.

# %%
L, C, V, T, B = SIZE.n_layers, SIZE.d_model, SIZE.vocab, SIZE.context, SIZE.batch
tokens = B * T
n_matmul = 12 * L * C * C + C * V
n_all = sum(p.size for p in runner.model.parameters())
by_hand = 6 * n_matmul * tokens + 12 * L * T * C * tokens
print(f"parameters: {n_all:,} in all, {n_matmul:,} of them multiply (N)")
print(f"6·N·tokens            = {6 * n_matmul * tokens / 1e9:.3f} GFLOP")
print(f"+ attention 12·L·T·C·tokens = {12 * L * T * C * tokens / 1e9:.3f} GFLOP  (T/(6C) = {T / (6 * C):.2f})")
print(f"by hand               = {by_hand / 1e9:.3f} GFLOP")
print(f"bench.Size.step_flops = {SIZE.step_flops() / 1e9:.3f} GFLOP")
print(f"profiler, op by op    = {prof.total_flops / 1e9:.3f} GFLOP")
rule = 6 * n_all * tokens
print(f"6 · (all parameters) · tokens = {rule / 1e9:.3f} GFLOP, the rule as usually quoted: "
      f"{rule / by_hand - 1:+.1%} off")

# %% [markdown]
# The count by hand, the benchmark's formula and the profiler agree exactly. The rule quoted
# with all parameters is off by a few percent: it counts the position embeddings, biases and
# layer-norm scales, which multiply no matrix, and leaves out the attention term. For a large
# model with $T \ll 6C$ both are small beside $12 L C^2$, and the rule is all one needs.
#
# **How fast is that?** Time a few steps and divide. The yardstick is the best this machine's
# BLAS does on one large float32 matrix product, measured now with the same threads
# (`bench.matmul_peak`).

# %%
step_ms = median_ms(runner.train_step)[0]
peak = bench.matmul_peak("numpy")
achieved = SIZE.step_flops() / (step_ms / 1e3) / 1e9
print(f"training step: {step_ms:.1f} ms = {tokens / (step_ms / 1e3):,.0f} tokens/s = {achieved:.1f} GFLOP/s")
print(f"numpy float32 2048x2048 matmul peak: {peak:.1f} GFLOP/s; the step reaches {achieved / peak:.0%} of it")

# %% [markdown]
# The gap between the two is the time spent in ops that do no counted FLOPs (section 1) and in
# small products that cannot reach the peak. The same accounting prices a real model: GPT-3 had
# $N = 175 \cdot 10^9$ parameters and was trained on $300 \cdot 10^9$ tokens (Brown et al., 2020).

# %%
gpt3_flops = 6 * 175e9 * 300e9
seconds_here = gpt3_flops / (achieved * 1e9)
assumed_gpu = 300e12  # an assumed sustained rate of one current data-centre GPU, for scale only
print(f"6·N·tokens = {gpt3_flops:.2e} FLOPs")
print(f"at this notebook's {achieved:.0f} GFLOP/s: {seconds_here / (365 * 86400):,.0f} years")
print(f"at an assumed 300 TFLOP/s per GPU: {gpt3_flops / assumed_gpu / 86400:,.0f} GPU-days, "
      f"or {gpt3_flops / assumed_gpu / 86400 / 1000:.0f} days on 1,000 such GPUs")

# %% [markdown]
# That is §8.2.1's "compute resources and training cost" in one line: the cost is proportional to
# parameters × tokens, and the only ways down are fewer FLOPs, or more of them per second, which
# is what the rest of this notebook is about.
#
# ## 4. Fused against composed
#
# `scaled_dot_product_attention` is one op with a hand-derived backward (notebook 05,
# `docs/derivations/attention.md`). `attention_from_primitives` computes the same function from
# primitive ops through the autograd: every step (scale, mask, subtract the row maximum, exp,
# sum, divide) makes a new $(B, H, T, T)$ array, and several are kept for the backward. Peak
# memory of one forward + backward (the profiler's `memory=True`), and median time:

# %%
cases = {"T=128": (4, 4, 128, 32), "T=256": (4, 4, 256, 32)}
fns = {"fused": F.scaled_dot_product_attention, "composed": attention_from_primitives}
memory, speed = {}, {}
for case, shape in cases.items():
    arrays = qkv(*shape)
    for name, fn in fns.items():
        with profile(memory=True, print_table=False) as block:
            attention_step(fn, *arrays, is_causal=True)
        memory[case, name] = block.peak_bytes / 2**20
    fused_ms, composed_ms = median_ms(*(lambda fn=fn: attention_step(fn, *arrays, is_causal=True) for fn in fns.values()),
                                     repeats=7)
    speed[case, "fused"], speed[case, "composed"] = fused_ms, composed_ms
    print(f"{case}: (B, H, T, T) array {np.prod(shape[:3]) * shape[2] * 4 / 2**20:.0f} MiB; "
          f"peak {memory[case, 'fused']:.0f} MiB fused, {memory[case, 'composed']:.0f} MiB composed "
          f"({memory[case, 'composed'] / memory[case, 'fused']:.1f}x); "
          f"{fused_ms:.1f} ms fused, {composed_ms:.1f} ms composed ({composed_ms / fused_ms:.2f}x)")

fig, axes = plt.subplots(1, 2, figsize=(11, 3))
x = np.arange(len(cases))
for ax, values, label in zip(axes, (memory, speed), ("peak MiB, forward + backward", "ms, forward + backward")):
    for i, name in enumerate(fns):
        ax.bar(x + 0.4 * i - 0.2, [values[case, name] for case in cases], width=0.4, label=name)
    ax.set_xticks(x, [f"causal attention, {case}" for case in cases])
    ax.set_title(label)
    ax.legend()
plt.show()

# %% [markdown]
# Fusing saves **memory first, time second**. The memory is several times smaller at both sizes:
# the composed twin keeps several $(B, H, T, T)$ arrays for its backward, while the fused backward
# keeps none between the forward and the backward (it rebuilds $P$ from $Q$ and $K$: one more
# product, in exchange for no stored $P$). The time saved is less certain: both versions share
# the matrix products, so the gain depends on how much of the work lies between them, and on the
# machine (`docs/derivations/attention.md` measured 1.1 to 1.2× at $B = H = 8$, $T = 256$,
# $D = 64$, against the ratios printed here). Layer norm is
# the same story on a smaller scale: written from primitives (as in notebook 04) it is a chain of
# ops, most of which keep an array of their own for the backward.

# %%
rng = np.random.default_rng(1)
x_arr = rng.standard_normal((16, 128, 256), dtype=np.float32)
w_arr, b_arr = np.ones(256, dtype=np.float32), np.zeros(256, dtype=np.float32)
dy_arr = rng.standard_normal(x_arr.shape, dtype=np.float32)


def layer_norm_composed(x, w, b):
    centered = x - x.mean(axis=-1, keepdims=True)
    return centered / ((centered * centered).mean(axis=-1, keepdims=True) + 1e-5).sqrt() * w + b


def layer_norm_step(fn):
    leaves = [Tensor(a, requires_grad=True) for a in (x_arr, w_arr, b_arr)]
    fn(*leaves).backward(dy_arr)


for name, fn in (("fused", F.layer_norm), ("composed", layer_norm_composed)):
    with profile(memory=True, print_table=False) as block:
        layer_norm_step(fn)
    print(f"layer norm {name:<8}: {sum(s.calls for s in block.stats.values())} op calls, peak {block.peak_bytes / 2**20:.0f} MiB "
          f"(x is {x_arr.nbytes / 2**20:.0f} MiB)")
fused_ms, composed_ms = median_ms(lambda: layer_norm_step(F.layer_norm), lambda: layer_norm_step(layer_norm_composed),
                                 repeats=7)
print(f"time: {fused_ms:.1f} ms fused, {composed_ms:.1f} ms composed ({composed_ms / fused_ms:.1f}x)")

# %% [markdown]
# ## 5. Training levers
#
# §9.5 asks how to train efficiently on GPUs. The usual answers are: lower precision, batches
# that fill the hardware, gradient accumulation when the batch does not fit, gradient clipping for
# stability, and, for generation, a KV cache. The first four are measured here on a smaller batch
# of the same GPT (B = 8), so that each takes a second or two.
#
# ### Precision: float32 against float64
#
# The package computes in float32 by default (`nt.DEFAULT_DTYPE`); gradient checks use float64.
# Casting every parameter to float64 gives the same model in double precision: twice the bytes
# per number, so twice the memory traffic, and BLAS does half as many float64 operations per
# vector instruction.

# %%
small = replace(SIZE, batch=8)
runner32, runner64 = bench.OursRunner(small), bench.OursRunner(small)
for param in runner64.model.parameters():
    param.data = param.data.astype(np.float64)
ms32, ms64 = median_ms(runner32.train_step, runner64.train_step)
bytes32 = sum(p.data.nbytes for p in runner32.model.parameters())
bytes64 = sum(p.data.nbytes for p in runner64.model.parameters())
print(f"default dtype: {np.dtype(nt.DEFAULT_DTYPE).name}")
print(f"training step, B=8: float32 {ms32:.1f} ms, float64 {ms64:.1f} ms ({ms64 / ms32:.1f}x); "
      f"parameters {bytes32 / 2**20:.2f} MiB against {bytes64 / 2**20:.2f} MiB")

# %% [markdown]
# GPUs take this further with 16-bit formats (float16, bfloat16) on tensor cores, usually in
# *mixed precision*: products in 16 bits, a float32 master copy of the weights and the optimizer
# state. The package has no 16-bit compute path; it only *reads* bfloat16 checkpoints, widening
# them to float32 (`nptransformer/serialization.py`).
#
# ### Batch size and tokens per second
#
# Every op call costs a fixed amount of Python and dispatch, whatever its size, and a BLAS product
# runs faster on larger matrices. A bigger batch spreads both over more tokens, until the
# arithmetic dominates; from there tokens per second level off (on a CPU they can even dip once
# the activations outgrow the processor's caches). The memory of the arrays the graph keeps for
# the backward (the profiler's "saved MB") grows with the batch all the way. On a GPU, with its
# thousands of arithmetic units, the batch needed to fill the hardware is much larger.

# %%
batches = [1, 2, 4, 8, 16, 32]
throughput, kept_mib = [], []
for batch_size in batches:
    size = replace(SIZE, batch=batch_size)
    r = bench.OursRunner(size)
    throughput.append(size.tokens / (median_ms(r.train_step, repeats=3)[0] / 1e3))
    with profile(print_table=False) as block:
        r.train_step()
    kept_mib.append(sum(s.saved_bytes for s in block.stats.values()) / 2**20)
    print(f"B={batch_size:>2}: {throughput[-1]:>8,.0f} tokens/s, activations kept for the backward {kept_mib[-1]:6.1f} MB")

fig, ax = plt.subplots(figsize=(6.5, 3))
ax.semilogx(batches, throughput, "o-")
ax.set_xticks(batches, [str(b) for b in batches])
ax.minorticks_off()
ax.set_xlabel("batch size B (sequences of 64 tokens)")
ax.set_ylabel("tokens / s", color="C0")
ax2 = ax.twinx()
ax2.semilogx(batches, kept_mib, "s--", color="C1")
ax2.set_ylabel("activations MB", color="C1")
ax.set_title("throughput and memory against the batch size")
plt.show()

# %% [markdown]
# ### Gradient accumulation and clipping
#
# When the batch one wants does not fit in memory, split it into micro-batches, run the backward
# of each, and step once. The engine makes this free: a backward **adds** into `.grad` (it never
# overwrites), so gradients of successive backwards accumulate until `zero_grad()`. Scaling each
# micro-batch's mean loss by $1/k$ makes the sum the mean over the whole batch, the same gradient
# as one big batch, up to float32 rounding. The peak memory is that of one micro-batch.

# %%
whole = bench.OursRunner(SIZE)
ids, targets = whole.ids, whole.targets  # (32, 64) token ids and next-token targets
params = list(whole.model.parameters())


def backward_whole():
    whole.model.zero_grad()
    F.cross_entropy(whole.model(ids), targets).backward()


def backward_accumulated(k=4):
    whole.model.zero_grad()
    for part_ids, part_targets in zip(np.split(ids, k), np.split(targets, k)):
        (F.cross_entropy(whole.model(part_ids), part_targets) * (1.0 / k)).backward()


grads = {}
for name, fn in (("one batch of 32", backward_whole), ("4 micro-batches of 8", backward_accumulated)):
    with profile(memory=True, print_table=False) as block:
        fn()
    grads[name] = [param.grad.copy() for param in params]
    print(f"{name:<22} peak {block.peak_bytes / 2**20:6.1f} MiB")
whole_grads, accumulated_grads = (np.concatenate([g.ravel() for g in gs]) for gs in grads.values())
difference = np.linalg.norm(whole_grads - accumulated_grads) / np.linalg.norm(whole_grads)
whole_ms, accumulated_ms = median_ms(backward_whole, backward_accumulated, repeats=3)
print(f"|whole - accumulated| / |whole| over all {whole_grads.size:,} gradient entries: {difference:.1e}")
print(f"time: {whole_ms:.0f} ms in one batch, {accumulated_ms:.0f} ms in four")

# %% [markdown]
# Accumulation buys memory for little or no time here: four calls of a quarter the size do the
# same arithmetic (on a GPU, micro-batches too small to fill it would cost time). **Gradient
# clipping** is the
# other lever of a stable step: `clip_grad_norm_` measures the global norm of all gradients as one
# vector and, if it is above `max_norm`, scales them all down together, keeping the direction.
# The `Trainer` (`nptransformer/train.py`) clips at 1.0 by default and logs the norm every step,
# because a spike in it is the first sign of a diverging run.

# %%
norm_before = clip_grad_norm_(params, max_norm=0.5)
norm_after = float(np.sqrt(sum((param.grad.astype(np.float64) ** 2).sum() for param in params)))
print(f"global gradient norm {norm_before:.3f}; after clip_grad_norm_(max_norm=0.5): {norm_after:.3f}")

# %% [markdown]
# ### The KV cache in decoding
#
# A GPT generates one token at a time. Without a cache, step $t$ runs the model over all $t$
# positions of the prefix again, though the keys and values of the first $t - 1$ have not changed
# (causal masking: an earlier position never sees a later token). With a `KVCache` per layer
# (`nptransformer/nn/attention.py`), each step projects only the new position, appends its key
# and value, and lets its query attend to all the cached ones. `GPT.generate` uses the cache
# unless `use_cache=False`; both give the same tokens. A GPT with $C = 128$, 2 layers, 4 heads,
# 128 positions:

# %%
kv_model = GPT(256, 128, 2, 4, max_len=128, rng=np.random.default_rng(0))
new_tokens = 127
generated = {use_cache: kv_model.generate([1], new_tokens, use_cache=use_cache) for use_cache in (True, False)}
print(f"{new_tokens} tokens from a 1-token prompt; the same tokens with and without the cache:",
      generated[True] == generated[False])

# %% [markdown]
# How much time does the cache save, and where? Time each step on its own, by calling the model
# as `generate` does: with a cache, one new position per call; without, the whole prefix. A step
# takes a millisecond or a few, about as long as the operating system lets another process run,
# so on a busy machine some runs of a step include such a wait: we keep the fastest of 3 runs at
# each position, the step's own cost.

# %%
sequence = [1] + generated[True]


def step_ms(use_cache):
    """Milliseconds of each decoding step along ``sequence``, position 1 to len(sequence)."""
    out, cache = [], kv_model.new_cache() if use_cache else None
    gc.disable()  # as timeit does: a garbage collection would land on the same steps in every run
    try:
        with nt.no_grad():
            for t in range(1, len(sequence) + 1):
                ids_now = np.array([sequence[t - 1:t] if use_cache else sequence[:t]])  # (1, 1) or (1, t)
                start = time.perf_counter()
                kv_model(ids_now, cache=cache)
                out.append((time.perf_counter() - start) * 1e3)
    finally:
        gc.enable()
    return out, cache


runs = {c: [step_ms(c) for _ in range(3)] for c in (True, False)}
per_step = {c: np.min([times for times, _ in runs[c]], axis=0) for c in runs}
cache = runs[True][-1][1]
cache_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.self_attn)
n_layers, width = len(kv_model.blocks), kv_model.d_model
for c, label in ((True, "with the cache"), (False, "without")):
    print(f"step {label:<14}: positions 1-16 {np.median(per_step[c][:16]):.2f} ms, "
          f"positions 113-128 {np.median(per_step[c][-16:]):.2f} ms; "
          f"{per_step[c].mean():.2f} ms per token over all {len(sequence)}")
print(f"the cache makes decoding {per_step[False].sum() / per_step[True].sum():.1f}x faster here")
print(f"the cache after {len(cache)} positions: {cache_bytes / 2**10:.0f} KiB "
      f"(2 · layers · positions · C · 4 bytes = {2 * n_layers * len(cache) * width * 4 / 2**10:.0f} KiB)")

fig, ax = plt.subplots(figsize=(7, 3))
positions = np.arange(1, len(sequence) + 1)
ax.plot(positions, per_step[False], label="no cache: the whole prefix each step")
ax.plot(positions, per_step[True], label="KV cache: the new position only")
ax.set_xlabel("position t of the generated token")
ax.set_ylabel("ms for this step")
ax.legend()
plt.show()

# %% [markdown]
# Without the cache a step grows with $t$, so generating $n$ tokens costs $O(n^2)$ positions'
# work (and attention inside each step adds another factor of $t$); with it a step stays nearly
# flat, and what it pays is memory: the cache holds a key and a value per position, layer and
# channel, which for a large model and a long context is gigabytes per sequence. At batch 1 a
# cached step is bound by the fixed cost of its op calls more than by arithmetic; `docs/benchmarks.md`
# ("KV-cache decoding") breaks a cached step down op by op.
#
# ## 6. The GPU
#
# Everything above ran on NumPy. The package runs unchanged on CuPy, NumPy's GPU twin, because
# no op ever names `numpy`: each asks `get_array_module(*inputs)` for the array module `xp` of its
# inputs, and computes and builds its constants with it. Softmax, for instance:

# %%
print(inspect.getsource(Softmax.forward))
x = np.ones((2, 3), dtype=np.float32)
print("get_array_module(numpy array) ->", get_array_module(x).__name__)
print("get_array_module(1.5, None)   ->", get_array_module(1.5, None).__name__, "(scalars and None do not decide)")
print("device_of(x) ->", device_of(x), "| Tensor(x).device ->", Tensor(x).device, "| model.device ->", runner.model.device)

# %% [markdown]
# There is no global device switch. `model.to("cuda")` moves every parameter (and gradient and
# buffer) to the GPU, `to_device(array, "cuda")` moves the data, and from then on every `xp` is
# CuPy. `cupy_available()` checks not only that CuPy imports but that a GPU answers an array op:
# `import cupy` can succeed on a machine without one.

# %%
if cupy_available():
    on_gpu = bench.OursRunner(SIZE, device="cuda")  # model.to("cuda"), and the batch through to_device
    cpu_ms, gpu_ms = median_ms(runner.train_step, on_gpu.train_step)  # train_step ends in loss.item(): synchronized
    xp = get_array_module(on_gpu.model.head.weight.data)
    print(f"model.device: {on_gpu.model.device}; get_array_module(a parameter) -> {xp.__name__}")
    print(f"training step of size S: CPU {cpu_ms:.1f} ms, GPU {gpu_ms:.1f} ms ({cpu_ms / gpu_ms:.1f}x)")
    try:
        on_gpu.model(runner.ids)  # NumPy token ids into a model on the GPU
    except DeviceError as exc:
        print("DeviceError:", exc)
else:
    try:
        get_cupy()
    except DeviceError as exc:
        print("no usable GPU here, so the GPU runs are skipped. The package says why:\n  ", exc)
    attempts = {"model.to('cuda')": lambda: runner.model.to("cuda"), "Tensor(x).to('cuda')": lambda: Tensor(x).to("cuda"),
                "Tensor(x).to('tpu')": lambda: Tensor(x).to("tpu")}
    for attempt, move in attempts.items():
        try:
            move()
        except DeviceError as exc:
            print(f"{attempt:<22} -> DeviceError: {exc}")
    print("the model is still on", runner.model.device)

# %% [markdown]
# When two devices meet in one op, say a NumPy mask built by mistake beside a CuPy array (the bug
# NumPy/CuPy learners hit most), `get_array_module` refuses to let one silently convert the other.
# On a machine without a GPU we can still watch it refuse, with a stand-in for a CuPy array: any
# object whose `__array_namespace__` names another array module.

# %%
class OtherDeviceArray:
    """Stands in for a CuPy array: an array that belongs to another array module."""

    def __array_namespace__(self):
        return types.SimpleNamespace(__name__="stand_in_device")


try:
    get_array_module(np.ones(3), OtherDeviceArray())
except DeviceError as exc:
    print("DeviceError:", exc)

# %% [markdown]
# Every op calls `get_array_module` on its inputs before it runs (`Function.apply` in
# `nptransformer/autograd.py`), so a model on the GPU fed NumPy token ids stops at its first op
# with this message, instead of copying data back and forth or failing deep inside CuPy.
#
# What a GPU changes is the balance measured above. The matrix products become far faster, so
# the elementwise ops, the Python between ops and the transfers between host and device become
# the larger share: fused kernels, large batches, fewer and bigger calls, and data that stays on
# the device matter more there than here.
#
# `docs/benchmarks.md` records this package's measured numbers, each with its command and
# machine; all of them are on a 2-core CPU (no GPU measurement is recorded yet:
# `python -m nptransformer.bench --device cuda` is the command for one). On one thread, a
# training step took 1.29, 1.14 and 1.08 times as long as the same GPT in PyTorch eager at sizes
# S, M and L, reaching 54.4, 71.4 and 78.4 GFLOP/s (53%, 69% and 76% of NumPy's matmul peak); a
# GPT with $C = 256$ and 4 layers decoded at 1.33 ms/token with the KV cache against 11.25
# without (8.4×). The same file profiles a size-M step and explains where the remaining gap to
# PyTorch lies (fused GELU and layer-norm kernels, flash attention, C++ dispatch).

# %% [markdown]
# ## Exercises
#
# 1. **Profile a bigger step.** Profile one training step of `bench.SIZES["M"]` and compare its
#    table with size S: which op's share grows, and why? Predict the `linear` GFLOP from
#    $6 \cdot 12 L C^2 \cdot \text{tokens}$ before you look.
# 2. **Where attention wins.** From $T / (6C)$, at which context length do the attention FLOPs of
#    size S equal those of its projections and feed-forward? Check with the profiler's
#    `scaled_dot_product_attention` and `linear` rows at that $T$ (keep $B \cdot T$ fixed).
# 3. **The memory of attention by hand.** At $B = 4$, $H = 4$, $T = 512$, $D = 32$, float32, how
#    many MiB is one $(B, H, T, T)$ array, and how many of them does the fused backward hold at
#    its peak? Compare with the peak measured in section 2 (`docs/derivations/attention.md` lists
#    the arrays).
# 4. **The head's share.** Increase the vocabulary of size S to 8,192 (`replace(SIZE, vocab=8192)`)
#    and recount $N$: what fraction of the FLOPs is now the head? Measure the step.
# 5. **Accumulation in a loop.** Write a training loop that takes an optimizer step every $k$
#    micro-batches and check, for $k = 1, 2, 4$, that the parameters after 3 steps agree with
#    whole-batch training to float32 rounding. What goes wrong if you forget the $1/k$?
# 6. **The cache's memory.** For a GPT with $C = 4096$, 32 layers and a context of 4,096 tokens,
#    how many GiB does the KV cache of one sequence take in float16 (2 bytes), and of a batch of
#    32? Check your formula on `kv_model`'s cache above.
# 7. **A GPU step.** On a machine with CuPy and a GPU, run section 6 and then profile the GPU
#    step. Why are the profiler's times on the GPU misleading unless each op is synchronized?
#    (CuPy launches kernels asynchronously: what does `loss.item()` do?)
