#!/usr/bin/env bash
# One GPU run (aim: under 5 minutes): build the CUDA extension, run the CUDA tests, time the
# rasterizer against nvdiffrast, the renderer and the training step; print short tables.
#
# On the lent GPU machine (Python 3.12, torch with CUDA, nvcc) missing packages travel as
# cp312 wheels in .whl/ (kornia, kornia_rs, trimesh, embreex, diffrp-nvdiffrast, ...; see README).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export VIDSIM2REAL_VERBOSE_BUILD=${VIDSIM2REAL_VERBOSE_BUILD:-0}
status=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

echo "== build the CUDA extension"
python3 - <<'PY' || status=1
import time, torch
from vidsim2real.ext import load_extension
t = time.time(); load_extension(cuda=True); print(f"built in {time.time() - t:.0f} s on {torch.cuda.get_device_name()}")
PY

echo "== CUDA tests"
python3 -m pytest -q -x -p no:cacheprovider tests/test_raster.py tests/test_render.py tests/test_train.py \
  --device cuda -k "cuda or device" || status=1

echo "== rasterizer vs nvdiffrast"
python3 benchmarks/bm_raster_gpu.py || status=1
echo "== render + features"
python3 benchmarks/bm_render.py --device cuda --sizes 256 512 || status=1
echo "== training step"
python3 benchmarks/bm_train_step.py --device cuda || status=1
exit $status
