#!/usr/bin/env bash
# One short call on a GPU machine: the speed benchmark, then a timed paper-scale
# grid with VGG19 (random weights: the cost does not depend on them).
# Usage: bash benchmarks/gpu.sh  (after `make setup`; prints everything to stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY benchmarks/attack_speed.py --device cuda
$PY benchmarks/paper_grid_timing.py --device cuda --images 100
