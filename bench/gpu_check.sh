#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): paper-size DNN step + MFU vs a DataLoader loop, K = 10 stacked
# vs sequential members, the AN4 neural stages from an archive; one JSON in OUT_DIR.
#
#   bench/gpu_check.sh OUT_DIR --archive an4_gpu.tar.gz [--device cuda:N] [--peak-tflops P]
#   bench/gpu_check.sh OUT_DIR --archive tiny.tar.gz --device cpu --tiny   # same code paths, CPU, < 2 min
#
# Needs only a Python with torch, numpy, pyyaml and tqdm ($PYTHON, default python3); the package is
# used from this source tree. Build the archive after `make an4` with `make an4-gpu-archive`.
# The run stops its sections at its budget (--budget-s: 450 s, tiny 110 s) and writes the JSON;
# `timeout` kills it at GPU_CHECK_KILL_S (470 s, tiny 150 s) should it hang inside a kernel.
# --tiny runs one CPU thread unless OMP_NUM_THREADS says otherwise: on a shared 2-core machine two
# threads per op were 5x slower (measured 118 s vs 24 s under a load average of 13).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
kill_s=${GPU_CHECK_KILL_S:-470}
for arg in "$@"; do
  if [ "$arg" = --tiny ]; then kill_s=${GPU_CHECK_KILL_S:-150}; export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
done
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec timeout -k 5 "$kill_s" "$python" "$repo/bench/gpu_check.py" "$@"
