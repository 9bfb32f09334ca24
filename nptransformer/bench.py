"""How fast is a GPT training step here, and how far from PyTorch?

    python -m nptransformer.bench                    # sizes S, M, L; against PyTorch when installed
    python -m nptransformer.bench --sizes M --repeats 9 --threads 1 --json results.json
    python -m nptransformer.bench --sizes S M --only decode --repeats 15   # decoding only
    python -m nptransformer.bench --device cuda --no-memory          # on a GPU: CuPy against PyTorch CUDA

For each size, a ``GPT`` (pre-LN, learned positions, tied head, exact GELU, float32, no dropout)
and the same model in PyTorch eager, with the same weights, are timed on the same batch:

* a training step: forward, cross-entropy, backward and an AdamW update (ms per step, tokens/s,
  achieved GFLOP/s and its fraction of the matrix-multiply peak measured in the same run);
* the forward alone (logits and loss, no graph);
* greedy decoding with a KV cache, batch 1, in ms per generated token (``GPT.generate`` here; a
  loop over the PyTorch model with its own cache there);
* the peak memory of a training step, each measured in a fresh process (see ``memory_probe``).

Runs of the two alternate (ours, theirs, ours, ...), so both see the same load on a shared
machine; the report gives medians (and minimums). Both use the same number of threads: NumPy's
BLAS and PyTorch are set to ``--threads`` (default: the number NumPy's BLAS uses now), through
threadpoolctl when it is installed.

FLOPs: a step's matrix products do 3 · (N (24 L C² + 2 C V) + 4 L B T² C) floating-point
operations for N = B·T tokens (the forward's projections, feed-forward and head, and the
attention's Q Kᵀ and P V; the backward does each product twice). ``nptransformer.profile``
counts the same number op by op (tests/test_bench.py checks it). Both frameworks are credited
with these FLOPs, although PyTorch's causal attention may skip the masked half.

On a GPU (``--device cuda``) our model runs on CuPy arrays and PyTorch's on CUDA tensors; the
matmul peak is then CuPy's and PyTorch's on the GPU. Every piece of timed work ends by reading a
number back to the host (the loss, the decoded tokens), which waits for the GPU to finish, so the
timings hold all of the device's work. Peak memory is measured on the CPU only.

PyTorch and CuPy are imported only inside the functions that need them: this module, and the
package, import without them.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy

from . import functional as F
from .autograd import no_grad
from .backend import DEVICES, DeviceError, get_array_module, get_cupy, to_device
from .nn import GPT, Linear
from .optim import AdamW


@dataclasses.dataclass(frozen=True)
class Size:
    """A GPT and the batch of its training step."""

    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    context: int
    batch: int

    @property
    def tokens(self) -> int:
        """Tokens per training step, N = B·T."""
        return self.batch * self.context

    def step_flops(self) -> int:
        """FLOPs of a training step's matrix products (forward once, backward twice that)."""
        n, c, layers, t = self.tokens, self.d_model, self.n_layers, self.context
        projections = n * (24 * layers * c * c + 2 * c * self.vocab)  # q, k, v, out (4C²), feed-forward (8C²), head
        attention = 4 * layers * self.batch * t * t * c  # Q Kᵀ and P V, 2·T·T·D each, over B·H heads
        return 3 * (projections + attention)


SIZES = {
    "tiny": Size(vocab=64, d_model=32, n_layers=1, n_heads=2, context=16, batch=4),  # a smoke test, for the tests
    "S": Size(vocab=256, d_model=128, n_layers=2, n_heads=4, context=64, batch=32),
    "M": Size(vocab=1024, d_model=256, n_layers=4, n_heads=4, context=128, batch=16),
    "L": Size(vocab=4096, d_model=512, n_layers=6, n_heads=8, context=256, batch=8),
}
DEFAULT_SIZES = ("S", "M", "L")
MEASUREMENTS = ("train", "forward", "decode", "memory")
LEARNING_RATE = 1e-4  # small, so that repeated steps on one batch stay in the same regime


# --------------------------------------------------------------------------- threads
def blas_threads() -> int | None:
    """The number of threads NumPy's BLAS uses now (threadpoolctl), or None when unknown."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in pool.get("filepath", ""):
            return int(pool["num_threads"])
    return None


def set_threads(n: int) -> str:
    """Run NumPy's BLAS (and, when loaded, PyTorch) on ``n`` threads; say how it was done."""
    try:
        import threadpoolctl
    except ImportError:
        if blas_threads() != n and os.environ.get("OPENBLAS_NUM_THREADS") != str(n):
            raise RuntimeError(
                f"bench: cannot set NumPy's BLAS to {n} threads without threadpoolctl; install it "
                f"(pip install threadpoolctl) or start Python with OPENBLAS_NUM_THREADS={n} OMP_NUM_THREADS={n}"
            ) from None
        how = "environment variables"
    else:
        threadpoolctl.threadpool_limits(limits=n)
        how = "threadpoolctl"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return how


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the models
def build_ours(size: Size, seed: int = 0) -> GPT:
    return GPT(size.vocab, size.d_model, size.n_layers, size.n_heads, max_len=size.context,
               rng=numpy.random.default_rng(seed))


def batch(size: Size, seed: int = 0):
    """Token ids (B, T) and next-token targets (B, T), int64."""
    rng = numpy.random.default_rng(seed + 1)
    ids = rng.integers(0, size.vocab, size=(size.batch, size.context + 1))
    return ids[:, :-1].copy(), ids[:, 1:].copy()


def _synchronize(xp) -> None:
    """Wait until the device of array module ``xp`` has finished its queued work (a no-op for NumPy)."""
    if xp is not numpy:
        xp.cuda.get_current_stream().synchronize()


def torch_reference(model: GPT):
    """The same GPT in PyTorch eager, holding a copy of ``model``'s weights (same parameter names).

    Built from torch.nn's layers as a PyTorch user would write it: ``nn.Linear`` for the four
    attention projections, ``F.scaled_dot_product_attention(is_causal=True)``, exact GELU,
    ``nn.LayerNorm`` (eps 1e-5), the head tied to the token embedding. ``forward(ids, cache)``
    takes an optional list of per-layer (keys, values) for decoding, appended in place.
    """
    import torch
    from torch import nn
    from torch.nn import functional as TF

    class Attention(nn.Module):
        def __init__(self, c, heads):
            super().__init__()
            self.heads = heads
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(c, c) for _ in range(4))

        def forward(self, x, cache=None, layer=0):
            b, t, c = x.shape
            split = lambda y: y.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731  (B, H, T, D)
            q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
            if cache is not None:
                if cache[layer] is not None:
                    k = torch.cat([cache[layer][0], k], dim=2)
                    v = torch.cat([cache[layer][1], v], dim=2)
                cache[layer] = (k, v)
            causal = t > 1  # one new query may see every cached key
            if causal and k.shape[2] != t:
                raise ValueError("torch_reference: several new tokens after a filled cache are not supported")
            out = TF.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return self.out_proj(out.transpose(1, 2).reshape(b, t, c))

    class MLP(nn.Module):
        def __init__(self, c, hidden):
            super().__init__()
            self.linear1, self.linear2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

        def forward(self, x):
            return self.linear2(TF.gelu(self.linear1(x)))

    class Block(nn.Module):
        def __init__(self, c, heads, hidden):
            super().__init__()
            self.ln1, self.attn = nn.LayerNorm(c), Attention(c, heads)
            self.ln2, self.mlp = nn.LayerNorm(c), MLP(c, hidden)

        def forward(self, x, cache=None, layer=0):
            x = x + self.attn(self.ln1(x), cache, layer)
            return x + self.mlp(self.ln2(x))

    class PositionEmbedding(nn.Module):
        def __init__(self, max_len, c):
            super().__init__()
            self.embedding = nn.Embedding(max_len, c)

    class TorchGPT(nn.Module):
        def __init__(self, vocab, c, layers, heads, max_len, hidden):
            super().__init__()
            self.tok_emb, self.pos_emb = nn.Embedding(vocab, c), PositionEmbedding(max_len, c)
            self.blocks = nn.ModuleList([Block(c, heads, hidden) for _ in range(layers)])
            self.ln_f = nn.LayerNorm(c)
            self.head = nn.Linear(c, vocab, bias=False)
            self.head.weight = self.tok_emb.weight

        def forward(self, ids, cache=None):
            offset = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
            positions = torch.arange(offset, offset + ids.shape[1], device=ids.device)
            x = self.tok_emb(ids) + self.pos_emb.embedding(positions)
            for i, block in enumerate(self.blocks):
                x = block(x, cache, i)
            return self.head(self.ln_f(x))

    block = model.blocks[0]
    theirs = TorchGPT(model.vocab_size, model.d_model, len(model.blocks), block.attn.num_heads, model.max_len,
                      block.mlp.linear1.out_features)
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(to_device(ours[name].data, "cpu")))
    return theirs


# --------------------------------------------------------------------------- the work
class OursRunner:
    """A training step, a forward, and greedy decoding of our GPT, on ``device`` ('cpu' or 'cuda')."""

    name = "nptransformer"

    def __init__(self, size: Size, seed: int = 0, device: str = "cpu"):
        self.size, self.device = size, device
        self.model = build_ours(size, seed).to(device)
        self.optimizer = AdamW(self.model.parameters(), lr=LEARNING_RATE)
        self.ids, self.targets = (to_device(a, device) for a in batch(size, seed))

    def train_step(self) -> float:
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(self.ids), self.targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def forward(self) -> float:
        with no_grad():
            return F.cross_entropy(self.model(self.ids), self.targets).item()

    def decode(self, new_tokens: int) -> list[int]:
        return self.model.generate([int(self.ids[0, 0])], new_tokens)


class TorchRunner:
    """The same three pieces of work for the PyTorch copy of an OursRunner's model, on its device."""

    name = "PyTorch"

    def __init__(self, ours: OursRunner):
        import torch

        self.torch = torch
        self.model = torch_reference(ours.model).to(ours.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE)  # weight decay 0.01 as ours
        self.ids, self.targets = (torch.from_numpy(to_device(a, "cpu")).to(ours.device) for a in (ours.ids, ours.targets))
        self.vocab = ours.size.vocab

    def _loss(self):
        logits = self.model(self.ids)
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, self.vocab), self.targets.reshape(-1))

    def train_step(self) -> float:
        self.optimizer.zero_grad()
        loss = self._loss()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def forward(self) -> float:
        with self.torch.no_grad():
            return self._loss().item()

    def decode(self, new_tokens: int) -> list[int]:
        """Greedy decoding with a KV cache: the first token, then one token per step."""
        torch = self.torch
        cache = [None] * len(self.model.blocks)
        ids = self.ids[:1, :1]
        tokens = []
        with torch.no_grad():
            for _ in range(new_tokens):
                log_probs = torch.log_softmax(self.model(ids, cache)[:, -1], dim=-1)  # as GPT.generate scores
                ids = log_probs.argmax(dim=-1, keepdim=True)  # (1, 1)
                tokens.append(int(ids))
        return tokens


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(runners, work, repeats: int, warmup: int) -> list[list[float]]:
    """Seconds of ``work(runner)``, ``repeats`` times per runner, the runners taking turns, after
    ``warmup`` untimed turns each."""
    for _ in range(warmup):
        for runner in runners:
            work(runner)
    times = [[] for _ in runners]
    for _ in range(repeats):
        for i, runner in enumerate(runners):
            gc.collect()
            times[i].append(_timed(lambda: work(runner)))
    return times


def _summary(seconds, per=1) -> dict:
    ms = [s * 1e3 / per for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "samples_ms": ms}


def matmul_peak(xp_name: str, n: int = 2048, repeats: int = 3, device: str = "cpu") -> float:
    """GFLOP/s of the best of ``repeats`` float32 (n, n) @ (n, n) products on ``device``: with
    PyTorch when ``xp_name`` is 'torch', else with our array module there (NumPy on the CPU, CuPy
    on the GPU; ``xp_name`` is then only the label). Each product is waited for."""
    rng = numpy.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=numpy.float32) for _ in range(2))
    if xp_name == "torch":
        import torch

        a, b = (torch.from_numpy(m).to(device) for m in (a, b))
        wait = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def product():
            torch.matmul(a, b)
            wait()
    else:
        a, b = to_device(a, device), to_device(b, device)
        xp = get_array_module(a)

        def product():
            xp.matmul(a, b)
            _synchronize(xp)

    product()  # warm-up
    best = min(_timed(product) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def matvec_floor(model: GPT, repeats: int = 21) -> float:
    """Milliseconds of one decoding step's matrix-vector products alone, median of ``repeats``.

    A step with a KV cache multiplies one position's vector by every weight matrix of the model
    once: the four attention projections and the two feed-forward layers of each block, and the
    head. This times exactly those products (NumPy, float32, batch 1), in that order, with
    nothing else. Once the weights outgrow the processor's caches, each product streams its
    matrix from main memory, in any framework: the time is then a floor under the decoding step
    of both, set by memory bandwidth, not by arithmetic or by Python.
    """
    weights = [m.weight.data for _, m in model.named_modules() if isinstance(m, Linear)]
    xp = get_array_module(*weights)
    vectors = [xp.ones((1, w.shape[1]), dtype=w.dtype) for w in weights]

    def step():
        for w, x in zip(weights, vectors):
            x @ w.T
        _synchronize(xp)

    step()
    return statistics.median(_timed(step) for _ in range(repeats)) * 1e3


# --------------------------------------------------------------------------- memory
def _proc_status(field: str) -> int | None:
    """A field of /proc/self/status in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def memory_probe(framework: str, size: Size, seed: int = 0) -> dict:
    """Peak memory of one training step, in this process, which should be fresh (see ``main``).

    Builds the model and its optimizer, runs one step (so the AdamW state exists and every lazy
    initialization is done), then resets the kernel's peak-RSS mark (/proc/self/clear_refs),
    runs a second step and reports the peak resident set size above the size before it: the
    gradients, the activations and the temporaries of a step, for both frameworks alike. For
    ours it also runs a third step under tracemalloc, which counts every NumPy array exactly.
    Run it in a process started with a fixed MALLOC_MMAP_THRESHOLD_ (as ``main`` does): then
    every large array is its own mapping, returned to the system when freed, so the resident set
    follows the live arrays instead of the allocator's free lists.
    """
    ours = OursRunner(size, seed)
    runner = ours if framework == "ours" else TorchRunner(ours)
    if runner is not ours:
        del ours
    runner.train_step()
    gc.collect()
    result = {"framework": framework}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM, the peak resident set size, to the current size
        before = _proc_status("VmRSS")
        runner.train_step()
        # The kernel's RSS counters are kept per thread and folded in lazily, so a step that needs
        # no new memory (the smallest sizes) can read a page or two below zero: that is no growth.
        result["rss_growth_bytes"] = max(0, _proc_status("VmHWM") - before)
    except (OSError, TypeError):
        result["rss_growth_bytes"] = None  # not Linux
    if framework == "ours":
        gc.collect()
        tracemalloc.start()
        start = tracemalloc.get_traced_memory()[0]
        runner.train_step()
        result["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1] - start
        tracemalloc.stop()
    return result


def _probe_in_subprocess(framework: str, size_name: str, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "nptransformer.bench", "--memory-probe", framework, "--sizes", size_name,
               "--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench: the memory probe {' '.join(command[1:])} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- the benchmark
def bench_size(size_name: str, size: Size, repeats: int, warmup: int, use_torch: bool, memory: bool,
               decode: bool, threads: int, log=print, train: bool = True, forward: bool = True,
               device: str = "cpu") -> dict:
    """Every measurement of one size (those whose flag is on); ``log`` gets a line as each one is done."""
    ours = OursRunner(size, device=device)
    runners = [ours] + ([TorchRunner(ours)] if use_torch else [])
    names = [r.name for r in runners]
    result = {"config": dataclasses.asdict(size), "tokens_per_step": size.tokens, "flops_per_step": size.step_flops(),
              "parameters": sum(p.size for p in ours.model.parameters())}
    losses = [r.forward() for r in runners]
    result["initial_loss"] = dict(zip(names, losses))
    if use_torch and abs(losses[0] - losses[1]) > 1e-3 * abs(losses[1]):
        raise RuntimeError(f"bench: the two models disagree before training: loss {losses[0]} vs {losses[1]}")

    def record(what, times, per=1):
        entry = {name: _summary(t, per) for name, t in zip(names, times)}
        if use_torch:
            entry["ratio"] = entry[names[0]]["median_ms"] / entry[names[1]]["median_ms"]
        result[what] = entry
        ratio = f", ratio {entry['ratio']:.2f}" if use_torch else ""
        log(f"  {what:<24}" + "  ".join(f"{n} {entry[n]['median_ms']:.2f} ms (min {entry[n]['min_ms']:.2f})" for n in names) + ratio)

    if train:
        record("train_step", alternate(runners, lambda r: r.train_step(), repeats, warmup))
        for name in names:
            seconds = result["train_step"][name]["median_ms"] / 1e3
            result["train_step"][name]["tokens_per_s"] = size.tokens / seconds
            result["train_step"][name]["gflops"] = size.step_flops() / seconds / 1e9
    if forward:
        record("forward", alternate(runners, lambda r: r.forward(), repeats, warmup))
    if decode:
        new_tokens = size.context
        record("decode_per_token", alternate(runners, lambda r: r.decode(new_tokens), max(3, repeats // 2), 1), new_tokens)
        result["decode_per_token"]["new_tokens"] = new_tokens
        floor = result["decode_per_token"]["matvec_floor_ms"] = matvec_floor(ours.model)
        log(f"  {'':<24}the matrix-vector products alone (each weight read once): {floor:.2f} ms per token")
        if use_torch and runners[0].decode(new_tokens) != runners[1].decode(new_tokens):
            log("  note: the two models decoded different tokens (float32 ties); the timings stand")
    if memory:
        probes = {"ours": _probe_in_subprocess("ours", size_name, threads)}
        if use_torch:
            probes["torch"] = _probe_in_subprocess("torch", size_name, threads)
        result["peak_memory"] = probes
        log("  peak memory of a step    " + "  ".join(
            f"{k} {v['rss_growth_bytes'] / 2**20:.1f} MB (RSS)" for k, v in probes.items() if v["rss_growth_bytes"] is not None
        ) + (f"  ours {probes['ours']['tracemalloc_peak_bytes'] / 2**20:.1f} MB (tracemalloc)"))
    return result


def machine(device: str = "cpu") -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__, "platform": platform.platform()}
    if device == "cuda":
        cupy = get_cupy()
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
        info["cupy"] = cupy.__version__
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        info["cpu"] = platform.processor()
    try:
        import threadpoolctl

        info["blas"] = [f"{p['internal_api']} {p['version']} ({p['user_api']})" for p in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    return info


def run(sizes=DEFAULT_SIZES, repeats=7, warmup=2, threads=None, use_torch=None, memory=True, decode=True,
        peak_size=2048, log=print, train=True, forward=True, device="cpu") -> dict:
    """The benchmark as a dict (what ``--json`` writes); ``log`` gets the human-readable report.
    ``train``, ``forward``, ``decode`` and ``memory`` switch each measurement on or off; ``device``
    is 'cpu' or 'cuda' (a DeviceError says why when no GPU is usable)."""
    if device not in DEVICES:
        raise ValueError(f"bench: unknown device {device!r}; expected one of {DEVICES}")
    if device == "cuda":
        get_cupy()  # a DeviceError naming what is missing, before any work
    if use_torch is None:
        use_torch = torch_available()
    if use_torch:
        import torch  # (loaded before the threads are set, so they apply to it too)

        if device == "cuda" and not torch.cuda.is_available():
            log("bench: this PyTorch cannot use the GPU; timing ours alone")
            use_torch = False
    if memory and device != "cpu":
        log("bench: peak memory is measured on the CPU only (RSS and tracemalloc); skipped on the GPU")
        memory = False
    threads = threads or blas_threads() or os.cpu_count()
    how = set_threads(threads)
    report = {"machine": machine(device), "device": device, "threads": threads, "threads_set_by": how,
              "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "repeats": repeats, "warmup": warmup}
    on = f"GPU {report['machine']['gpu']}" if device == "cuda" else f"{threads} thread(s) ({how})"
    log(f"nptransformer.bench: {report['machine']['cpu']}, {os.cpu_count()} CPUs, {on}, numpy {numpy.__version__}"
        + (f", torch {report['machine']['torch']}" if use_torch else ", no torch")
        + f"; load average {report['load_average_start']}")
    ours_key = "numpy" if device == "cpu" else "cupy"
    report["matmul_peak_gflops"] = {ours_key: matmul_peak(ours_key, peak_size, device=device)}
    if use_torch:
        report["matmul_peak_gflops"]["torch"] = matmul_peak("torch", peak_size, device=device)
    report["matmul_peak_size"] = peak_size
    log(f"  float32 {peak_size}x{peak_size} matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in report["matmul_peak_gflops"].items()))
    report["sizes"] = {}
    for name in sizes:
        size = SIZES[name]
        log(f"size {name}: vocab {size.vocab}, d_model {size.d_model}, {size.n_layers} layers, {size.n_heads} heads, "
            f"context {size.context}, batch {size.batch}; {size.step_flops() / 1e9:.2f} GFLOP per step")
        entry = bench_size(name, size, repeats, warmup, use_torch, memory, decode, threads, log, train, forward, device)
        peak = report["matmul_peak_gflops"]
        for framework, key in (("nptransformer", ours_key), ("PyTorch", "torch")):
            if framework in entry.get("train_step", {}):
                step = entry["train_step"][framework]
                step["fraction_of_matmul_peak"] = step["gflops"] / peak[key]
                log(f"  {framework}: {step['tokens_per_s']:,.0f} tokens/s, {step['gflops']:.1f} GFLOP/s = "
                    f"{step['fraction_of_matmul_peak']:.0%} of {key}'s matmul peak")
        report["sizes"][name] = entry
    report["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log(f"load average at the end: {report['load_average_end']}")
    return report


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options, on ``parser`` (``python -m nptransformer.bench`` and ``nptransformer bench``)."""
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(DEFAULT_SIZES),
                        help="model sizes to run (default: S M L; 'tiny' is a smoke test)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each measurement (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--threads", type=int, help="BLAS and PyTorch threads (default: what NumPy's BLAS uses now)")
    parser.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch, even when installed")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="run both models on the CPU (default) or on the GPU (CuPy against PyTorch CUDA)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements (subprocesses)")
    parser.add_argument("--no-decode", action="store_true", help="skip KV-cache decoding")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, metavar="WHAT",
                        help=f"run only these measurements, of {', '.join(MEASUREMENTS)} (default: all)")
    parser.add_argument("--peak-size", type=int, default=2048,
                        help="side of the square float32 matrices whose product measures the matmul peak (default 2048)")
    parser.add_argument("--json", metavar="FILE", help="also write every number as JSON to FILE ('-' for stdout)")
    parser.add_argument("--memory-probe", choices=("ours", "torch"), help=argparse.SUPPRESS)
    return parser


def run_from_args(args) -> int:
    if args.repeats < 1 or args.warmup < 0 or args.peak_size < 1 or (args.threads is not None and args.threads < 1):
        raise SystemExit("bench: --repeats, --threads and --peak-size must be at least 1, --warmup at least 0")
    if args.memory_probe:  # the child process of a peak-memory measurement: one JSON line
        set_threads(args.threads)
        print(json.dumps(memory_probe(args.memory_probe, SIZES[args.sizes[0]])))
        return 0
    to_stdout = args.json == "-"
    log = (lambda line: print(line, file=sys.stderr)) if to_stdout else print
    wanted = set(args.only or MEASUREMENTS)
    if args.no_memory:
        wanted.discard("memory")
    if args.no_decode:
        wanted.discard("decode")
    report = run(args.sizes, args.repeats, args.warmup, args.threads, False if args.no_torch else None,
                 "memory" in wanted, "decode" in wanted, args.peak_size, log, "train" in wanted, "forward" in wanted,
                 args.device)
    if args.json:
        text = json.dumps(report, indent=2)
        if to_stdout:
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nptransformer.bench", description=__doc__.split("\n\n")[0])
    args = add_arguments(parser).parse_args(argv)
    try:
        return run_from_args(args)
    except DeviceError as err:  # --device cuda where no GPU is usable: one line saying why
        print(f"nptransformer.bench: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
