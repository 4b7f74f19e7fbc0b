#!/usr/bin/env bash
# Run lgla-jax as N processes on this machine, each with its own CPU devices, joined by
# JAX's multi-controller runtime (localhost coordinator). What the multi-process test uses;
# also a way to try a multi-host setup before renting one.
#
# Usage: launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS -- MAIN_ARGS...
#   launch/local_multiprocess.sh 2 4 -- --config=configs/demo.py --workdir=/tmp/demo_mp
# Environment: PORT (coordinator port, default 12355), PYTHON (default python).
set -euo pipefail

if [ "$#" -lt 3 ] || [ "$3" != "--" ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS -- --config=configs/NAME.py [more lgla_jax.main flags]" >&2
  exit 2
fi
num_processes=$1
devices=$2
shift 3
port=${PORT:-12355}
python=${PYTHON:-python}

pids=()
for ((i = 0; i < num_processes; i++)); do
  JAX_COORDINATOR_ADDRESS="127.0.0.1:${port}" JAX_NUM_PROCESSES="$num_processes" JAX_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" \
    "$python" -m lgla_jax.main "$@" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
