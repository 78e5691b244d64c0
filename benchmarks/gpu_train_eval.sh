#!/usr/bin/env bash
# Train a full-size model (configs/train/default.yaml) for MINUTES on one GPU (bf16), then
# evaluate it on the held-out scenes; writes table.json, table.md and contact_sheet.png into
# OUT_DIR. Finishes within MINUTES + 2. From a clean copy of the repo, on a bare GPU machine
# (missing packages: cp312 wheels in .whl/, DEVELOPERS.md).
# Usage: benchmarks/gpu_train_eval.sh MINUTES [OUT_DIR]
set -uo pipefail
MIN=${1:?usage: benchmarks/gpu_train_eval.sh MINUTES [OUT_DIR]}
source "$(dirname "$0")/gpu_env.sh"
OUT=${2:-${OUT:-out/gpu_train_eval}}
python3 benchmarks/gpu_train_eval.py --minutes "$MIN" --out "$OUT"
