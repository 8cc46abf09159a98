#!/usr/bin/env bash
# The GPU acceptance run (issue 15): every promise modelyard makes about GPUs, checked on a real one, in one go.
#
#   bench/gpu/check.sh [--out DIR] [--write-results]   # on a GPU machine: results.md + results.json in DIR
#   bench/gpu/check.sh --dry-run --out DIR             # anywhere: the script's own plumbing, GPU checks "not run"
#
# Uses the machine's own Python and torch ($MODELYARD_GPU_PYTHON, else .venv/bin/python where it exists, else
# python3). Whatever else the check needs and that Python lacks comes from build/gpu-wheels, prepared beforehand
# on a machine that reaches PyPI with `python -m bench.gpu.wheels download` and carried with the checkout.
# Exits 0 when every promise held, 1 when one failed, 2 when the setup itself failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${MODELYARD_GPU_PYTHON:-}" ]; then PY=$MODELYARD_GPU_PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
SITE=$(realpath -m "${MODELYARD_GPU_SITE:-build/gpu-site}")
WHEELS=${MODELYARD_GPU_WHEELS:-build/gpu-wheels}
started=$(date +%s)
if ! "$PY" -m bench.gpu.wheels install --wheels "$WHEELS" --site "$SITE" >"${TMPDIR:-/tmp}/modelyard-gpu-setup.json"; then
  echo "bench/gpu/check.sh: setup failed (see above)" >&2
  exit 2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" -m bench.gpu.check --setup-plan "${TMPDIR:-/tmp}/modelyard-gpu-setup.json" \
  --setup-seconds "$(( $(date +%s) - started ))" "$@"
