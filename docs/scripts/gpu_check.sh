#!/usr/bin/env bash
# Issue 9's GPU checks as one command, for a machine with an NVIDIA GPU, CuPy and a CUDA build of
# PyTorch (the project's device machine has all three). Run from the repository root:
#
#     bash docs/scripts/gpu_check.sh
#
# It writes, under $OUT (default ./gpu_check):
#   gpu.txt                      the GPU (nvidia-smi) and whether CuPy can use it
#   tests.log                    the suite (not the notebooks), on every backend the `xp` fixture
#                                finds: NumPy, the strict namespace and CuPy
#   bench_cuda.txt, .json        the benchmark on the GPU: ours on CuPy against PyTorch CUDA eager
# Each step has a time limit, so that the whole run fits in ten minutes.
set -uo pipefail
out=${OUT:-gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python3 -c "from nptransformer.backend import cupy_available; print('CuPy usable:', cupy_available())" >> "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
timeout 300 python3 -m pytest -q -o addopts="--import-mode=importlib -p no:cacheprovider" tests > "$out/tests.log" 2>&1
echo "pytest exit status $?" >> "$out/tests.log"
tail -n 3 "$out/tests.log"
timeout 240 python3 -m nptransformer.bench --device cuda --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.txt"
