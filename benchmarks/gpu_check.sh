#!/usr/bin/env bash
# The GPU check (benchmarks/README.md, "GPU check"): what a session lent a GPU for a few minutes launches.
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget-s 480] [--device cuda]   on the GPU machine ($OUT by default)
#   bash benchmarks/gpu_check.sh --dry-run --out /tmp/gpu-check                  on a CPU, tiny sizes (what CI runs)
# Wheels in .whl/ (the GPU machine cannot download; 64 MiB at most) are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
exec "$python" benchmarks/gpu_check.py "$@"
