# Sourced by the GPU scripts: packages the bare GPU machine lacks (cp312 wheels in .whl/, see
# DEVELOPERS.md) go to /tmp/site; the repo is on PYTHONPATH; kernels build for this GPU only.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: installing the wheels in .whl/ failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
missing=$(python3 - <<'PY'
import importlib.util
# imageio_ffmpeg is optional (29 MB): videos decode with OpenCV without it, and the GPU table then
# skips the H.264 round trip (benchmarks/temporal_table.encode)
need = ["torch", "kornia", "trimesh", "cv2", "yaml", "tqdm", "scipy", "matplotlib", "rtree"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "error: missing Python packages: $missing (put their cp312 wheels in .whl/, see DEVELOPERS.md)" >&2
  exit 2
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0); print(f'{c[0]}.{c[1]}')")
  export TORCH_CUDA_ARCH_LIST
fi
