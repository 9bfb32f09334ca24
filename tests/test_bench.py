"""The benchmark and the profiler: well-formed results and exact FLOP counts (no wall-clock assertions).

- ``python -m nptransformer.bench`` on the smoke-test size writes JSON with every measurement;
- the PyTorch reference model is the same model: same logits, loss and gradients, same tokens;
- ``--device cuda`` runs both on the GPU, or says in one line why it cannot;
- ``nptransformer.profile`` counts the FLOPs of matmul, linear and attention exactly, forward and
  backward, and over a whole GPT step it agrees with ``Size.step_flops``;
- it reports the memory each op's graph node keeps, and leaves the engine clean.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nptransformer.functional as F
from nptransformer import Tensor, autograd, bench, no_grad
from nptransformer.backend import cupy_available, device_of
from nptransformer.profiler import matmul_flops, profile
from nptransformer.functional.primitives import MatMul


def _check_summary(entry):
    assert entry["median_ms"] > 0 and entry["min_ms"] > 0 and entry["min_ms"] <= entry["median_ms"]
    assert all(isinstance(t, float) and t > 0 for t in entry["samples_ms"])


def _run_tiny(tmp_path, *flags):
    path = tmp_path / "bench.json"
    assert bench.main(["--sizes", "tiny", "--repeats", "2", "--warmup", "1", "--threads", "1", "--peak-size", "256", "--json", str(path),
                       *flags]) == 0
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- the benchmark
def test_tiny_bench_writes_well_formed_json(tmp_path, capsys):
    report = _run_tiny(tmp_path, "--no-torch")
    assert report["threads"] == 1 and report["repeats"] == 2 and report["matmul_peak_size"] == 256
    assert report["matmul_peak_gflops"]["numpy"] > 0 and "torch" not in report["matmul_peak_gflops"]
    tiny = report["sizes"]["tiny"]
    size = bench.SIZES["tiny"]
    assert tiny["config"] == {"vocab": 64, "d_model": 32, "n_layers": 1, "n_heads": 2, "context": 16, "batch": 4}
    assert tiny["tokens_per_step"] == size.batch * size.context
    assert tiny["flops_per_step"] == size.step_flops() > 0
    for what in ("train_step", "forward", "decode_per_token"):
        assert set(tiny[what]) >= {"nptransformer"} and "ratio" not in tiny[what]
        _check_summary(tiny[what]["nptransformer"])
    step = tiny["train_step"]["nptransformer"]
    assert math.isclose(step["tokens_per_s"], size.tokens / (step["median_ms"] / 1e3))
    assert math.isclose(step["gflops"], size.step_flops() / (step["median_ms"] / 1e3) / 1e9)
    assert 0 < step["fraction_of_matmul_peak"] == step["gflops"] / report["matmul_peak_gflops"]["numpy"]
    assert tiny["decode_per_token"]["new_tokens"] == size.context
    assert tiny["decode_per_token"]["matvec_floor_ms"] > 0
    memory = tiny["peak_memory"]["ours"]  # measured in a fresh process
    assert memory["framework"] == "ours" and memory["tracemalloc_peak_bytes"] > 0
    assert memory["rss_growth_bytes"] is None or memory["rss_growth_bytes"] >= 0
    out = capsys.readouterr().out
    assert "size tiny" in out and "train_step" in out and "tokens/s" in out


def test_only_runs_the_measurements_asked_for(tmp_path, capsys):
    tiny = _run_tiny(tmp_path, "--no-torch", "--only", "decode")["sizes"]["tiny"]
    _check_summary(tiny["decode_per_token"]["nptransformer"])
    assert not {"train_step", "forward", "peak_memory"} & set(tiny)
    tiny = _run_tiny(tmp_path, "--no-torch", "--only", "train", "memory", "--no-memory")["sizes"]["tiny"]
    assert "train_step" in tiny and not {"forward", "decode_per_token", "peak_memory"} & set(tiny)
    assert "tokens/s" in capsys.readouterr().out


def test_tiny_bench_against_torch(tmp_path, torch):
    report = _run_tiny(tmp_path, "--no-memory")
    tiny = report["sizes"]["tiny"]
    for what in ("train_step", "forward", "decode_per_token"):
        _check_summary(tiny[what]["PyTorch"])
        assert tiny[what]["ratio"] == tiny[what]["nptransformer"]["median_ms"] / tiny[what]["PyTorch"]["median_ms"]
    losses = tiny["initial_loss"]
    assert losses["nptransformer"] == pytest.approx(losses["PyTorch"], rel=1e-5)
    assert report["matmul_peak_gflops"]["torch"] > 0 and "torch" in report["machine"]


def test_torch_reference_is_the_same_model(torch):
    """Same logits, loss, gradients and greedy tokens: both frameworks do the same work."""
    ours = bench.OursRunner(bench.SIZES["tiny"], seed=3)
    theirs = bench.TorchRunner(ours)
    logits = ours.model(ours.ids)
    theirs_logits = theirs.model(theirs.ids)
    np.testing.assert_allclose(theirs_logits.detach().numpy(), logits.numpy(), rtol=1e-4, atol=1e-5)
    loss = F.cross_entropy(logits, ours.targets)
    loss.backward()
    theirs_loss = theirs._loss()
    theirs_loss.backward()
    assert loss.item() == pytest.approx(theirs_loss.item(), rel=1e-6)
    ours_grads = dict(ours.model.named_parameters())
    for name, p in theirs.model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ours_grads[name].grad, rtol=1e-3, atol=1e-5, err_msg=name)
    assert ours.decode(12) == theirs.decode(12)


@pytest.mark.skipif(cupy_available(), reason="checks the message on a machine without a usable GPU")
def test_bench_on_cuda_without_a_gpu_says_why_in_one_line(capsys):
    assert bench.main(["--device", "cuda", "--sizes", "tiny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nptransformer.bench: error: device 'cuda' is not usable here") and err.count("\n") == 1


@pytest.mark.cupy
@pytest.mark.skipif(not cupy_available(), reason="needs a GPU with CuPy")
def test_tiny_bench_on_the_gpu(tmp_path, capsys):
    report = _run_tiny(tmp_path, "--device", "cuda")
    tiny = report["sizes"]["tiny"]
    assert report["device"] == "cuda" and report["machine"]["gpu"] and report["matmul_peak_gflops"]["cupy"] > 0
    for what in ("train_step", "forward", "decode_per_token"):
        _check_summary(tiny[what]["nptransformer"])
    assert "peak_memory" not in tiny and "measured on the CPU only" in capsys.readouterr().out
    if "PyTorch" in tiny["initial_loss"]:  # a PyTorch built with CUDA
        assert tiny["initial_loss"]["nptransformer"] == pytest.approx(tiny["initial_loss"]["PyTorch"], rel=1e-4)
        assert tiny["train_step"]["ratio"] > 0


def test_the_benchmark_on_a_stand_in_gpu_does_the_cpu_work(stand_in_gpu):
    on_gpu, on_cpu = bench.OursRunner(bench.SIZES["tiny"], device="cuda"), bench.OursRunner(bench.SIZES["tiny"])
    assert on_gpu.model.device == "cuda" and device_of(on_gpu.ids) == device_of(on_gpu.targets) == "cuda"
    assert on_gpu.train_step() == pytest.approx(on_cpu.train_step(), rel=1e-6)
    assert on_gpu.forward() == pytest.approx(on_cpu.forward(), rel=1e-6)
    assert on_gpu.decode(8) == on_cpu.decode(8)
    assert bench.matvec_floor(on_gpu.model, repeats=1) > 0
    lines = []
    report = bench.run(("tiny",), repeats=1, warmup=0, use_torch=False, device="cuda", peak_size=64, log=lines.append)
    assert report["device"] == "cuda" and report["machine"]["gpu"].startswith("stand-in")
    assert report["matmul_peak_gflops"]["cupy"] > 0 and "peak_memory" not in report["sizes"]["tiny"]
    assert any("measured on the CPU only" in line for line in lines)


def test_bench_refuses_bad_counts():
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "tiny", "--repeats", "0"])


def test_step_flops_formula():
    """3 x (per token 24 L C² + 2 C V, plus 4 L B T² C for attention), e.g. for size S."""
    s = bench.SIZES["S"]
    n = 32 * 64
    assert s.step_flops() == 3 * (n * (24 * 2 * 128**2 + 2 * 128 * 256) + 4 * 2 * 32 * 64**2 * 128)


# --------------------------------------------------------------------------- the profiler
def _leaf(rng, *shape):
    return Tensor(rng.standard_normal(shape), requires_grad=True)


def test_profile_counts_matmul_flops_exactly(rng):
    a, b = _leaf(rng, 3, 4, 5), _leaf(rng, 5, 6)
    with profile(print_table=False) as prof:
        (a @ b).sum().backward()
    stats = prof.stats["matmul"]
    assert stats.calls == 1
    assert stats.forward_flops == 2 * 3 * 4 * 5 * 6  # 2k per output element: k = 5, 3·4·6 outputs
    assert stats.backward_flops == 2 * stats.forward_flops  # da = dout bᵀ and db = aᵀ dout
    assert prof.total_flops == 3 * 720 and prof.stats["sum"].flops == 0


def test_profile_counts_only_the_gradients_that_are_wanted(rng):
    x = Tensor(rng.standard_normal((2, 3, 4)))  # no gradient for x: only dW is computed
    w, bias = _leaf(rng, 5, 4), _leaf(rng, 5)
    v = Tensor(rng.standard_normal(4))  # a 1-D operand of matmul: (2, 3, 4) @ (4,) -> (2, 3)
    with profile(print_table=False) as prof:
        (F.linear(x, w, bias).sum() + (x @ v).sum()).backward()
    assert (prof.stats["linear"].forward_flops, prof.stats["linear"].backward_flops) == (2 * 6 * 4 * 5, 2 * 6 * 4 * 5)
    assert (prof.stats["matmul"].forward_flops, prof.stats["matmul"].backward_flops) == (2 * 6 * 4, 0)


def test_profile_counts_attention_flops_and_its_saved_memory(rng):
    q, k, v = _leaf(rng, 2, 3, 4, 8), _leaf(rng, 2, 3, 5, 8), _leaf(rng, 2, 3, 5, 6)
    with profile(print_table=False) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    stats = prof.stats["scaled_dot_product_attention"]
    qk, pv = 2 * 6 * 4 * 5 * 8, 2 * 6 * 4 * 5 * 6  # Q Kᵀ and P V over the 2·3 heads
    assert stats.forward_flops == qk + pv
    assert stats.backward_flops == 2 * pv + 2 * qk  # dV and dP; dQ and dK
    qkv_bytes = 2 * 3 * (4 * 8 + 5 * 8 + 5 * 6) * 8
    assert stats.saved_bytes == qkv_bytes  # only q, k, v: no (T, T) array, P is rebuilt in the backward
    assert stats.out_bytes == 2 * 3 * 4 * 6 * 8
    with profile(print_table=False) as prof:
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, rng=np.random.default_rng(0))
    assert prof.stats["scaled_dot_product_attention"].saved_bytes == qkv_bytes + 2 * 3 * 4 * 5  # and the boolean keep-mask


def test_profile_counts_each_saved_buffer_once_and_nothing_without_a_graph(rng):
    x, w1, w2 = _leaf(rng, 6, 4), _leaf(rng, 3, 4), _leaf(rng, 2, 4)
    with profile(print_table=False) as prof:
        y = F.linear(x, w1) + 0.0  # linear keeps x and w1; the addition keeps nothing
        z = F.linear(x, w2)  # x is kept already: only w2 is new
    assert prof.stats["linear"].saved_bytes == (6 * 4 + 3 * 4 + 2 * 4) * 8
    assert prof.stats["add"].saved_bytes == 0 and prof.stats["add"].out_bytes == 6 * 3 * 8
    with no_grad(), profile(print_table=False) as prof:
        F.linear(x, w1)
    assert prof.stats["linear"].saved_bytes == 0 and prof.stats["linear"].out_bytes == 6 * 3 * 8
    assert y.shape == (6, 3) and z.shape == (6, 2)


def test_matmul_flops_of_ops_without_products_is_zero(rng):
    assert matmul_flops(autograd.Function, [], ()) == (0, 0)
    assert matmul_flops(MatMul, [np.ones(7), np.ones(7)], (True, False)) == (14, 14)  # a dot product


def test_profile_of_a_gpt_step_counts_the_step_flops():
    runner = bench.OursRunner(bench.SIZES["tiny"])
    runner.train_step()
    with profile(print_table=False) as prof:
        runner.train_step()
    assert prof.total_flops == bench.SIZES["tiny"].step_flops()
    assert prof.wall_s >= prof.op_s > 0
    assert {"linear", "scaled_dot_product_attention", "layer_norm", "gelu", "cross_entropy"} <= set(prof.stats)


def test_profile_reports_saved_bytes_and_memory_peaks(rng, capsys):
    x = _leaf(rng, 4, 8)
    with profile(memory=True) as prof:
        F.layer_norm(x, None, None).sum().backward()
    stats = prof.stats["layer_norm"]
    assert stats.saved_bytes == (4 * 8 + 2 * 4) * 8  # x, and the mean and 1/σ (one float64 per row each)
    assert stats.out_bytes == 4 * 8 * 8 and stats.peak_bytes >= 4 * 8 * 8
    assert prof.peak_bytes >= stats.peak_bytes
    table = capsys.readouterr().out
    assert table == prof.table() + "\n"
    assert "layer_norm" in table and "peak MB" in table and "peak traced memory of the block" in table


def test_profile_sorts_and_removes_itself_even_after_an_error(rng):
    assert autograd._observers == []
    with pytest.raises(ZeroDivisionError):
        with profile(print_table=False):
            _leaf(rng, 2, 2).exp()
            1 / 0
    assert autograd._observers == []
    with profile(print_table=False, sort_by="calls") as prof:
        x = _leaf(rng, 3)
        (x.exp() * x.exp()).sum()
    assert prof.table().splitlines()[3].startswith("exp")
    with pytest.raises(ValueError, match="sort_by"):
        profile(sort_by="name")


def test_profile_works_as_a_decorator(rng, capsys):
    @profile()
    def step():
        return (_leaf(rng, 2, 3) @ _leaf(rng, 3, 2)).sum()

    step()
    step()
    assert capsys.readouterr().out.count("matmul") == 2
