#!/usr/bin/env bash
# Run lgla-jax on several GPU machines: one process per machine, all GPUs of a machine per
# process, joined by JAX's multi-controller runtime.
#
# Under SLURM (one task per node; jax reads SLURM's environment):
#   srun --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/gpu_multinode.sh \
#       --config=configs/cifar100_ir100.py --workdir=/shared/runs/c100
# Elsewhere, on every machine, with the same coordinator (machine 0's address):
#   COORDINATOR=10.0.0.1:12355 NUM_PROCESSES=4 PROCESS_ID=<0..3> launch/gpu_multinode.sh \
#       --config=configs/cifar100_ir100.py --workdir=/shared/runs/c100
# The workdir must be on storage every machine sees (checkpoints are written collectively).
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 --config=configs/NAME.py --workdir=DIR [more lgla_jax.main flags]" >&2
  exit 2
fi
python=${PYTHON:-python}

if [ -n "${SLURM_NTASKS:-}" ]; then
  exec "$python" -m lgla_jax.main "$@"
fi
for var in COORDINATOR NUM_PROCESSES PROCESS_ID; do
  if [ -z "${!var:-}" ]; then
    echo "error: not under SLURM and $var is not set; set COORDINATOR=host:port," \
         "NUM_PROCESSES and PROCESS_ID on every machine (see the header of $0)" >&2
    exit 2
  fi
done
JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_PROCESSES" JAX_PROCESS_ID="$PROCESS_ID" \
  exec "$python" -m lgla_jax.main "$@"
