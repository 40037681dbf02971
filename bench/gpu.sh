#!/usr/bin/env bash
# The benchmarks on a GPU, in one go (bench/README.md "GPU"): run from the repository root of a
# checkout with its virtual environment (`pip install -e .[bench]`) on a machine with an NVIDIA
# GPU and CTranslate2 built with CUDA. Never in CI.
#
#   bench/gpu.sh      # python -m bench (3 runs), bench.streaming, a profiled run, bench.worker_cpu
#   RUNS=1 bench/gpu.sh               # one run of the main benchmark
#   PYTHON=.venv/bin/python bench/gpu.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
RUNS="${RUNS:-3}"
OUT="bench/out/gpu-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

# CTranslate2's PyPI wheels (4.x) are built against CUDA 12 and load libcublas.so.12 at their
# first GPU decode (the worker's image, infra/worker.Dockerfile, is CUDA 12 and has it). A host
# with CUDA 13 alone has libcublas.so.13, whose GEMM entry points are the ones CTranslate2 calls:
# this run then hands it cuBLAS 13 under the .12 name (CUBLAS12_SHIM=0 leaves it be), and says so.
if [ "${CUBLAS12_SHIM:-1}" = 1 ] && ! "$PYTHON" -c 'import ctypes; ctypes.CDLL("libcublas.so.12")' 2>/dev/null; then
  cublas13="$(ldconfig -p | awk '/libcublas\.so\.13 /{print $NF; exit}')"
  if [ -n "$cublas13" ]; then
    shim="$PWD/$OUT/cublas12"
    mkdir -p "$shim"
    ln -sf "$cublas13" "$shim/libcublas.so.12"
    ln -sf "$(dirname "$cublas13")/libcublasLt.so.13" "$shim/libcublasLt.so.12"
    export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "no libcublas.so.12 here: CTranslate2 gets $cublas13 under that name" | tee "$OUT/cublas.txt"
  fi
fi

card="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
cuda_devices="$("$PYTHON" -c 'import ctranslate2; print(ctranslate2.get_cuda_device_count())')"
if [ "$cuda_devices" -lt 1 ]; then
  echo "CTranslate2 sees no CUDA device (is it a CUDA build?)" >&2
  exit 2
fi
{
  echo "card: $card"
  echo "ctranslate2: $("$PYTHON" -c 'import ctranslate2; print(ctranslate2.__version__)')"
  echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | tee "$OUT/machine.txt"

# The model is built by the first benchmark (bench.jobs.ensure_model) and reused by the second.
HEADRACE_DEVICE=cuda "$PYTHON" -m bench --device cuda --runs "$RUNS" 2>&1 | tee "$OUT/bench.txt"
HEADRACE_DEVICE=cuda "$PYTHON" -m bench.streaming --device cuda 2>&1 | tee "$OUT/streaming.txt"
# Where the worker's time goes on this GPU: one more run, sampled with py-spy (`pip install -e
# .[bench]` brings it); sampling perturbs the run, so it stays out of the table above.
HEADRACE_DEVICE=cuda "$PYTHON" -m bench --device cuda --runs 1 --no-probes --profile 2>&1 |
  tee "$OUT/profile.txt"
# The worker's own CPU per token on this host's cores (no GPU in it: the ceiling a worker puts on
# any GPU, bench/README.md "Worker CPU"), from the same checkout as the tables above.
"$PYTHON" -m bench.worker_cpu 2>&1 | tee "$OUT/worker_cpu.txt"

echo
echo "tables: $OUT/{bench,streaming,profile,worker_cpu}.txt (card: $card)"
