#!/usr/bin/env bash
# The GPU speed check of the README's speed table, in one call of at most ~8 minutes on a
# lent device machine. Prepare here, then run there with .whl and .official carried:
#   tools/device_wheels.sh                                  # wheels the machine lacks -> .whl/
#   git --git-dir=/work/.mirror/Tao0-0+LGLA/repo archive --prefix=.official/ HEAD | tar x
#   (device) OUT=$OUT tools/device_benchmark.sh
# Writes $OUT/devices.txt, $OUT/official.jsonl and $OUT/benchmark.jsonl (one JSON line per
# measurement) and $OUT/fmnist.log:
#   1. the official PyTorch step (ResNet-32 x3, CIFAR-100, batch 128, float32) on the GPU;
#   2. lgla_jax.benchmark on synthetic CIFAR-100-LT data: float32 and bfloat16 at batch
#      128, float32 at batch 512: the parts, and a real run of EPOCHS epochs (compilation,
#      evaluations every 20 epochs and checkpoints included; FULL=1: all 400 epochs);
#   3. the Fashion-MNIST-LT protocol end to end (real data, if the four IDX files are
#      carried in .fmnist/: cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/), wall time
#      (process start to exit), where it goes (setup, first dispatch, train, evaluation,
#      checkpoints) and accuracy; then once more with the first run's compiled steps cached;
#   4. (AA_CHECK=1, a second call: about 2 x 5 replica runs) the autoaugment variant of that
#      protocol, 5 seeds as replicas, with host and with device augmentation:
#      $OUT/fmnist_aa_host.log and $OUT/fmnist_aa_device.log end with their mean +- std.
#      AA_CHECK=1 SKIP_SPEED=1 runs only this part (dry run: AA_CONFIG=...:quick,autoaugment,seeds5).
# What travels: the tree (~19 MB), .whl (~10 MB), .official (<1 MB), .fmnist (30 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-configs/cifar100_ir100.py}  # dry run on a CPU: CONFIG=...:quick STEPS=2 EPOCHS=1
STEPS=${STEPS:-30}
EPOCHS=${EPOCHS:-40}
TEST=${SYNTHETIC_TEST:-10000}  # synthetic test images (CIFAR-100: 10,000)
[[ "${FULL:-0}" == 1 ]] && EPOCHS=400
source tools/device_env.sh

if [[ "${SKIP_SPEED:-0}" != 1 && -d .official ]]; then
  LGLA_REF=$PWD/.official "$PYTHON" tools/official_step_speed.py 50 cuda | tee -a "$OUT/official.jsonl"
fi

bench() {
  "$PYTHON" -m lgla_jax.benchmark --config="$CONFIG" --synthetic --steps="$STEPS" \
    --epochs="$EPOCHS" --synthetic_test="$TEST" "$@" | tee -a "$OUT/benchmark.jsonl"
}
if [[ "${SKIP_SPEED:-0}" != 1 ]]; then
  bench --config.dtype=float32
  bench --config.dtype=bfloat16
  bench --config.dtype=float32 --config.batch_size=512 --config.eval_batch_size=1000
fi

if [[ "${SKIP_SPEED:-0}" != 1 && -d .fmnist ]]; then
  start=$EPOCHREALTIME
  "$PYTHON" -m lgla_jax.main --config="${FMNIST_CONFIG:-configs/fmnist_lt_ir100.py}" \
    --config.dataset.data_dir="$PWD/.fmnist" --workdir=/tmp/fmnist_run 2>&1 | tail -40 > "$OUT/fmnist.log"
  "$PYTHON" -c "print('wall_s', round($EPOCHREALTIME - $start, 2))" | tee -a "$OUT/fmnist.log"
  # The same run again in a new workdir with the first one's compiled steps (a rerun)
  start=$EPOCHREALTIME
  "$PYTHON" -m lgla_jax.main --config="${FMNIST_CONFIG:-configs/fmnist_lt_ir100.py}" \
    --config.dataset.data_dir="$PWD/.fmnist" --workdir=/tmp/fmnist_rerun \
    --config.compilation_cache_dir=/tmp/fmnist_run/compilation_cache 2>&1 | tail -3 >> "$OUT/fmnist.log"
  "$PYTHON" -c "print('wall_s_compiled_steps_cached', round($EPOCHREALTIME - $start, 2))" | tee -a "$OUT/fmnist.log"
fi

if [[ "${AA_CHECK:-0}" == 1 && -d .fmnist ]]; then
  for place in host device; do
    on=$([[ $place == device ]] && echo True || echo False)
    "$PYTHON" -m lgla_jax.main --config="${AA_CONFIG:-configs/fmnist_lt_ir100.py:autoaugment,seeds5}" \
      --config.dataset.data_dir="$PWD/.fmnist" --config.augment.on_device=$on \
      --config.dataset.on_device=$on --workdir=/tmp/fmnist_aa_$place 2>&1 | tail -20 \
      > "$OUT/fmnist_aa_$place.log"
  done
fi
