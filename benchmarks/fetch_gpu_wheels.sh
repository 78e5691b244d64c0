#!/usr/bin/env bash
# Download the cp312 wheels the bare GPU machines lack into .whl/ (git-ignored; run where PyPI
# is reachable). The GPU scripts install them from there (benchmarks/gpu_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
for pkg in kornia kornia_rs trimesh rtree xatlas "imageio-ffmpeg==0.6.0" diffrp-nvdiffrast embreex; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg" || echo "warning: no cp312 wheel for $pkg" >&2
done
ls -la .whl
du -sh .whl
