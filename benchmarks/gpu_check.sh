#!/usr/bin/env bash
# One GPU check (aim: under 3 minutes on an H100), from a clean copy of the repo:
# build the CUDA kernels, run the CUDA tests, print the speed table (benchmarks/gpu_bench.py).
# Usage: benchmarks/gpu_check.sh [OUT_DIR]   (missing packages: cp312 wheels in .whl/, DEVELOPERS.md)
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
OUT=${1:-${OUT:-out/gpu_check}}
mkdir -p "$OUT"
status=0
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

echo "== build the CUDA kernels"
python3 - <<'PY' || status=1
import time, torch
from vidsim2real.ext import load_extension
t = time.time(); load_extension(cuda=True); print(f"built (or found) in {time.time() - t:.0f} s on {torch.cuda.get_device_name()}")
PY

echo "== CUDA tests"
python3 -m pytest -q -x -p no:cacheprovider tests/test_raster.py tests/test_render.py tests/test_texture.py \
  --device cuda -k "cuda or device or fused" || status=1

echo "== speed (each row against its baseline, same run)"
python3 benchmarks/gpu_bench.py --json "$OUT/gpu_bench.json" | tee "$OUT/gpu_bench.md" || status=1
echo "gpu_check: $(( $(date +%s) - start )) s, exit $status"
exit $status
