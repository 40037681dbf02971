#!/usr/bin/env bash
# The benchmarks on a GPU, in one go (bench/README.md "GPU"): run from the repository root of a
# checkout with its virtual environment (`pip install -e .[bench]`) on a machine with an NVIDIA
# GPU and CTranslate2 built with CUDA. Never in CI.
#
#   bench/gpu.sh                      # python -m bench (3 runs) and python -m bench.streaming
#   RUNS=1 bench/gpu.sh               # one run of the main benchmark
#   PYTHON=.venv/bin/python bench/gpu.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
RUNS="${RUNS:-3}"
OUT="bench/out/gpu-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

card="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
cuda_devices="$("$PYTHON" -c 'import ctranslate2; print(ctranslate2.get_cuda_device_count())')"
if [ "$cuda_devices" -lt 1 ]; then
  echo "CTranslate2 sees no CUDA device (is it a CUDA build?)" >&2
  exit 2
fi
{
  echo "card: $card"
  echo "ctranslate2: $("$PYTHON" -c 'import ctranslate2; print(ctranslate2.__version__)')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | tee "$OUT/machine.txt"

# The model is built by the first benchmark (bench.jobs.ensure_model) and reused by the second.
HEADRACE_DEVICE=cuda "$PYTHON" -m bench --device cuda --runs "$RUNS" 2>&1 | tee "$OUT/bench.txt"
HEADRACE_DEVICE=cuda "$PYTHON" -m bench.streaming --device cuda 2>&1 | tee "$OUT/streaming.txt"

echo
echo "tables: $OUT/bench.txt, $OUT/streaming.txt (card: $card)"
