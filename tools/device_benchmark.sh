#!/usr/bin/env bash
# The GPU throughput check, one command on a lent device machine (see README, "Speed"):
#   tools/device_benchmark.sh            (OUT=results folder; .whl/ from tools/device_wheels.sh)
# Installs the carried wheels, then runs lgla_jax.benchmark on synthetic CIFAR-shaped data
# for cifar100_ir100 (float32 and bfloat16; train step alone and with the full input
# pipeline) and appends one JSON line per run to $OUT/benchmark.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/cifar100_ir100.py}
STEPS=${STEPS:-100}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee "$OUT/devices.txt"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv >> "$OUT/devices.txt"
for dtype in float32 bfloat16; do
  "$PYTHON" -m lgla_jax.benchmark --config="$CONFIG" --steps="$STEPS" --synthetic \
    --config.dtype="$dtype" --config.num_workers="${NUM_WORKERS:-12}" | tee -a "$OUT/benchmark.jsonl"
done
