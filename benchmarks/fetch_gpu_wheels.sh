#!/usr/bin/env bash
# Download the cp312 wheels a bare GPU machine lacks into .whl/ (git-ignored; run where PyPI is
# reachable). The GPU scripts install them from there (benchmarks/gpu_env.sh).
# Usage: benchmarks/fetch_gpu_wheels.sh [--all]
#   default: what the GPU scripts need (~9 MB: the repository and .whl/ must travel in 64 MiB);
#   --all:   also imageio-ffmpeg 0.6.0 (MP4 in/out, 29 MB) and embreex (the Embree test, 15 MB),
#            for the whole test suite or video output on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(kornia kornia_rs trimesh rtree xatlas diffrp-nvdiffrast)
case "${1:-}" in
  --all) pkgs+=("imageio-ffmpeg==0.6.0" embreex) ;;
  "") ;;
  *) echo "usage: benchmarks/fetch_gpu_wheels.sh [--all]" >&2; exit 2 ;;
esac
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
for pkg in "${pkgs[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg" || echo "warning: no cp312 wheel for $pkg" >&2
done
ls -la .whl
whl=$(du -sb .whl | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "wheels $((whl / 1048576)) MiB + tracked files $((tracked / 1048576)) MiB = $(((whl + tracked) / 1048576)) MiB"
