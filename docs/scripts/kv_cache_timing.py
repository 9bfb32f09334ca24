"""Milliseconds per generated token, with and without the KV cache, for a GPT and a Seq2Seq decoder.

    OPENBLAS_NUM_THREADS=1 python docs/scripts/kv_cache_timing.py    # 5 runs of each, median reported
    python docs/scripts/kv_cache_timing.py --repeats 9                # BLAS with its default threads

Both models have d_model 256, 4 heads, feed-forward width 1024 and a context of 128 positions;
GPT has 4 layers, the Seq2SeqTransformer 4 encoder and 4 decoder layers. Each run is one greedy
``generate`` of 128 tokens, batch 1, float32, weights from a fixed seed:

* GPT: from a 1-token prompt (128 positions in all), without an EOS;
* Seq2Seq: from a 64-token source. The generator's EOS bias is set to -inf so that every run
  produces the full 128 tokens (the untrained model would otherwise stop at a random length).

Without the cache, step t runs the model over all t positions of the prefix; with it, over the
newest position only. Both produce the same tokens (checked here). The runs with and without the
cache alternate, so both see the same load on a shared machine; the table gives the median (and
the minimum) of the per-run milliseconds per generated token. The Seq2Seq time includes encoding
the source once. The results are pasted in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy

from nptransformer.nn import GPT, Seq2SeqTransformer

D_MODEL, HEADS, LAYERS, FF, CONTEXT, VOCAB = 256, 4, 4, 1024, 128, 1024
NEW_TOKENS, SOURCE_LEN, BOS, EOS = 128, 64, 1, 2


def gpt_case():
    """generate(use_cache) for a GPT: NEW_TOKENS tokens from a 1-token prompt."""
    model = GPT(VOCAB, D_MODEL, LAYERS, HEADS, max_len=CONTEXT, dim_feedforward=FF, rng=numpy.random.default_rng(0))
    return lambda use_cache: model.generate([BOS], NEW_TOKENS, use_cache=use_cache)


def seq2seq_case():
    """generate(use_cache) for a Seq2SeqTransformer: NEW_TOKENS tokens from one SOURCE_LEN-token source."""
    model = Seq2SeqTransformer(VOCAB, VOCAB, d_model=D_MODEL, nhead=HEADS, num_encoder_layers=LAYERS,
                               num_decoder_layers=LAYERS, dim_feedforward=FF, max_len=CONTEXT,
                               rng=numpy.random.default_rng(0))
    model.generator.bias.data[EOS] = -numpy.inf  # never stop early: every run makes NEW_TOKENS tokens
    src = numpy.random.default_rng(1).integers(3, VOCAB, size=(1, SOURCE_LEN))
    return lambda use_cache: model.generate(src, BOS, EOS, NEW_TOKENS, use_cache=use_cache)[0]


def ms_per_token(run, repeats):
    """{use_cache: [ms per generated token of each run]}, runs alternating, after one warm-up each."""
    reference = {use_cache: run(use_cache) for use_cache in (True, False)}  # warm-up
    if reference[True] != reference[False] or len(reference[True]) != NEW_TOKENS:
        raise SystemExit(f"expected the same {NEW_TOKENS} tokens with and without the cache, got {reference}")
    times = {True: [], False: []}
    for _ in range(repeats):
        for use_cache in (True, False):
            start = time.perf_counter()
            tokens = run(use_cache)
            times[use_cache].append((time.perf_counter() - start) * 1e3 / len(tokens))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default 5)")
    args = parser.parse_args()
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, numpy {numpy.__version__}, OPENBLAS_NUM_THREADS={threads}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"# d_model {D_MODEL}, {HEADS} heads, {LAYERS} layers, feed-forward {FF}, context {CONTEXT}, "
          f"vocabulary {VOCAB}; {NEW_TOKENS} tokens, batch 1, float32, greedy; median (min) of {args.repeats} runs")
    print("| model | ms/token, KV cache | ms/token, no cache | speed-up |")
    print("|---|---|---|---|")
    for name, case in (("GPT (1-token prompt)", gpt_case), (f"Seq2Seq ({SOURCE_LEN}-token source)", seq2seq_case)):
        times = ms_per_token(case(), args.repeats)
        cached, full = (statistics.median(times[c]) for c in (True, False))
        print(f"| {name} | {cached:.2f} ({min(times[True]):.2f}) | {full:.2f} ({min(times[False]):.2f}) | "
              f"{full / cached:.1f}x |")
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
