#!/usr/bin/env bash
# Create (or reuse) a Cloud TPU VM slice, install lgla-jax on every worker and run the same
# command on all of them; jax finds the other workers itself on a TPU VM.
#
# Usage:
#   TPU_NAME=lgla-pod ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#   WORKDIR=gs://my-bucket/runs/c100 launch/tpu_pod.sh --config=configs/cifar100_ir100.py
# Optional: RUNTIME_VERSION (default tpu-ubuntu2204-base), REPO (git URL of lgla-jax,
# default: copy this checkout with gcloud scp), DATA_DIR (passed as
# --config.dataset.data_dir; a bucket path such as gs://my-bucket/data, or a folder present
# on every worker; a missing CIFAR/Fashion-MNIST file is downloaded into the bucket).
# The whole run (checkpoints, reports, plots, TensorBoard events) lands in WORKDIR; a rerun
# of the same command resumes from it. See docs/buckets.md.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 --config=configs/NAME.py [more lgla_jax.main flags]" >&2
  exit 2
fi
for var in TPU_NAME ZONE ACCELERATOR_TYPE WORKDIR; do
  if [ -z "${!var:-}" ]; then
    echo "error: $var is not set (see the header of $0)" >&2
    exit 2
  fi
done
command -v gcloud >/dev/null || { echo "error: gcloud is not installed" >&2; exit 2; }
runtime=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
tpu=(gcloud compute tpus tpu-vm)

if ! "${tpu[@]}" describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  "${tpu[@]}" create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$ACCELERATOR_TYPE" --version "$runtime"
fi

if [ -n "${REPO:-}" ]; then
  fetch="rm -rf lgla-jax && git clone --depth 1 $REPO lgla-jax"
else
  src=$(cd "$(dirname "$0")/.." && pwd)
  tar -C "$src" --exclude=.git --exclude='.venv*' --exclude=workdirs -czf /tmp/lgla-jax.tgz .
  "${tpu[@]}" scp /tmp/lgla-jax.tgz "$TPU_NAME":lgla-jax.tgz --zone "$ZONE" --worker=all
  fetch="rm -rf lgla-jax && mkdir lgla-jax && tar -C lgla-jax -xzf lgla-jax.tgz"
fi
data_flag=""
if [ -n "${DATA_DIR:-}" ]; then
  data_flag="--config.dataset.data_dir=$DATA_DIR"
fi
args=$(printf '%q ' "$@")
"${tpu[@]}" ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  $fetch
  cd lgla-jax
  python3 -m pip install -q -U 'jax[tpu]' -e '.[gcs]'
  python3 -m lgla_jax.main $args --workdir=$WORKDIR $data_flag
"
