#!/usr/bin/env bash
# The GPU checks of issues 10 and 11 (speed, and the replica goals): by default one call of
# at most ~8 minutes on a lent device machine, then PARTS=replicas,convs,aa in a second call.
# Prepare here, then run there with .whl, .official and .fmnist carried:
#   tools/device_wheels.sh                                  # wheels the machine lacks -> .whl/
#   git --git-dir=/work/.mirror/Tao0-0+LGLA/repo archive --prefix=.official/ HEAD model utils | tar x
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/
#   (device) OUT=$OUT tools/device_benchmark.sh
# PARTS (comma-separated, run in this order; default fmnist,official,bench) picks
# what runs, cheapest and most decisive first, so that a call cut short keeps them. Each
# part appends to its files in $OUT as it goes:
#   fmnist    the Fashion-MNIST-LT protocol end to end (real data from .fmnist/): wall time
#             (process start to exit), where it goes and its accuracy (fmnist.log); once
#             more with the first run's compiled steps cached; then its 5 seeds as replicas
#             in one run (:seeds5), wall time and mean +- std (fmnist_seeds5.log);
#   official  the official PyTorch step (ResNet-32 x3, CIFAR-100, batch 128, float32) on the
#             GPU (official.jsonl);
#   bench     lgla_jax.benchmark on synthetic CIFAR-100-LT: float32 and bfloat16 at batch
#             128, float32 at batch 512: the parts, and a real run of EPOCHS epochs
#             (compilation, evaluations every 20 epochs and checkpoints included; FULL=1:
#             all 400 epochs) (benchmark.jsonl);
#   replicas  the same real run with 5 seeds as replicas, float32 (benchmark.jsonl);
#   aa        (about 2 x 5 replica runs) the autoaugment variant of the
#             protocol, 5 seeds as replicas, with host and with device augmentation:
#             fmnist_aa_host.log and fmnist_aa_device.log end with their mean +- std;
#   convs     the parts again (no real run) with model.conv_impl=split, float32 and
#             bfloat16, next to bench's auto (= grouped off CPU): which convolution
#             form the accelerators' default should be (benchmark.jsonl);
#   profile   where the step's time goes: a jax.profiler trace of 10 step-alone dispatches
#             at batch 128 (float32, bfloat16) and of 5 vmapped replicas, summed by
#             operation (tools/trace_summary.py): profile_<name>.txt.
# Dry run on a CPU: CONFIG=configs/cifar100_ir100.py:quick STEPS=2 EPOCHS=1
#   FMNIST_CONFIG=configs/fmnist_lt_ir100.py:quick AA_CONFIG=configs/fmnist_lt_ir100.py:quick,autoaugment,seeds5
#   PARTS=fmnist,bench,replicas,convs,aa OUT=/tmp/out tools/device_benchmark.sh  (official: torch, GPU)
# What travels: the tree (~19 MB), .whl (~10 MB), .official (<1 MB), .fmnist (30 MB).
set -uo pipefail  # (no -e: a part that fails leaves the others to run)
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PYTHON=${PYTHON:-python3}
PARTS=",${PARTS:-fmnist,official,bench},"
CONFIG=${CONFIG:-configs/cifar100_ir100.py}
FMNIST_CONFIG=${FMNIST_CONFIG:-configs/fmnist_lt_ir100.py}
STEPS=${STEPS:-30}
EPOCHS=${EPOCHS:-40}
TEST=${SYNTHETIC_TEST:-10000}  # synthetic test images (CIFAR-100: 10,000)
[[ "${FULL:-0}" == 1 ]] && EPOCHS=400
source tools/device_env.sh
part() { [[ "$PARTS" == *",$1,"* ]]; }
wall() { "$PYTHON" -c "print('$1', round($EPOCHREALTIME - $2, 2))"; }
fmnist() {  # fmnist CONFIG WORKDIR [overrides...]: one run on the carried data, its console
  local config=$1 workdir=$2; shift 2
  "$PYTHON" -m lgla_jax.main --config="$config" --config.dataset.data_dir="$PWD/.fmnist" \
    --workdir="$workdir" "$@" 2>&1
}
[[ "$FMNIST_CONFIG" == *:* ]] && more=, || more=:  # how a further variant is appended

if part fmnist && [[ -d .fmnist ]]; then
  start=$EPOCHREALTIME
  fmnist "$FMNIST_CONFIG" /tmp/fmnist_run | tail -40 > "$OUT/fmnist.log"
  wall wall_s "$start" | tee -a "$OUT/fmnist.log"
  # The same run again in a new workdir with the first one's compiled steps (a rerun)
  start=$EPOCHREALTIME
  fmnist "$FMNIST_CONFIG" /tmp/fmnist_rerun \
    --config.compilation_cache_dir=/tmp/fmnist_run/compilation_cache | tail -3 >> "$OUT/fmnist.log"
  wall wall_s_compiled_steps_cached "$start" | tee -a "$OUT/fmnist.log"
  # Issue 11: 5 seeds as replicas in one run (goal: <= 1.5x the single run's wall time)
  start=$EPOCHREALTIME
  fmnist "$FMNIST_CONFIG${more}seeds5" /tmp/fmnist_seeds5 | tail -40 > "$OUT/fmnist_seeds5.log"
  wall wall_s "$start" | tee -a "$OUT/fmnist_seeds5.log"
fi

if part official && [[ -d .official ]]; then
  LGLA_REF=$PWD/.official "$PYTHON" tools/official_step_speed.py 50 cuda | tee -a "$OUT/official.jsonl"
fi

bench() {
  "$PYTHON" -m lgla_jax.benchmark --config="$CONFIG" --synthetic --steps="$STEPS" \
    --epochs="$EPOCHS" --synthetic_test="$TEST" "$@" | tee /dev/stderr | grep '^{' >> "$OUT/benchmark.jsonl"
}  # (the real run's progress lines go to the call's output, the JSON lines to the file)
if part bench; then
  bench --config.dtype=float32
  bench --config.dtype=bfloat16
  bench --config.dtype=float32 --config.batch_size=512 --config.eval_batch_size=1000
fi
if part replicas; then  # issue 11: 5 seeds of the CIFAR recipe (goal: 400 epochs in <= 6 min)
  bench --config.dtype=float32 --config.replicas.seeds='(0,1,2,3,4)'
fi

if part convs; then  # the experts' convolutions as one per expert (bench ran them grouped)
  bench --config.dtype=float32 --config.model.conv_impl=split --epochs=0
  bench --config.dtype=bfloat16 --config.model.conv_impl=split --epochs=0
fi

if part profile; then  # the goals' misses (docs/performance.md): which kernels take the step
  for variant in "f32 --config.dtype=float32" "bf16 --config.dtype=bfloat16" \
                 "replicas5 --config.dtype=float32 --config.replicas.seeds=(0,1,2,3,4)"; do
    name=${variant%% *}
    "$PYTHON" -m lgla_jax.benchmark --config="$CONFIG" --synthetic --steps=10 --epochs=0 \
      --synthetic_test=1000 --profile="/tmp/profile_$name" ${variant#* } | grep '^{' >> "$OUT/benchmark.jsonl"
    "$PYTHON" tools/trace_summary.py "/tmp/profile_$name" --top=40 > "$OUT/profile_$name.txt"
  done
fi

if part aa && [[ -d .fmnist ]]; then
  for place in host device; do
    on=$([[ $place == device ]] && echo True || echo False)
    fmnist "${AA_CONFIG:-configs/fmnist_lt_ir100.py:autoaugment,seeds5}" /tmp/fmnist_aa_$place \
      --config.augment.on_device=$on --config.dataset.on_device=$on | tail -20 \
      > "$OUT/fmnist_aa_$place.log"
  done
fi
