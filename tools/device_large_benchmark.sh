#!/usr/bin/env bash
# The ImageNet-size GPU speed check (issue 13), in one call of at most ~8 minutes on a lent
# device machine. Prepare here, then run there with .whl and .official carried:
#   tools/device_wheels.sh                                  # wheels the machine lacks -> .whl/
#   git --git-dir=/work/.mirror/Tao0-0+LGLA/repo archive --prefix=.official/ HEAD model utils | tar x
#   (device) OUT=$OUT tools/device_large_benchmark.sh
# Writes $OUT/devices.txt, $OUT/official_large.jsonl and $OUT/large.jsonl (one JSON line per
# measurement):
#   1. the official PyTorch step: ResNeXt-50 x3, 224x224, batch 64, float32;
#   2. lgla_jax.benchmark on ResNet-50 x3 and ResNeXt-50 x3 (ImageNet-LT configs, 224x224,
#      batch 64), float32 and bfloat16: synthetic JPEGs through the real decode +
#      RandAugment pipeline (WORKERS grain workers), and the same on in-memory arrays (no
#      decode); each gives end-to-end and step-alone images/s and the peak device memory;
#   3. (DEVICE_AUGMENT=1, the default) the JPEG case in bfloat16 again with
#      --config.augment.on_device=True: the host decodes and crops, the step does flip,
#      ColorJitter and RandAugment (augment_device_imagenet), to choose the default.
# Ten compilations of a 224x224 network: if one call cannot hold them, run CONFIGS=... or
# DTYPES=... in two calls. Dry run on a CPU (6 minutes, 64x64 quick networks):
#   QUICK=1 STEPS=2 WORKERS=0 OUT=/tmp/o tools/device_large_benchmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-10}  # dispatches of 8 steps each on a GPU
WORKERS=${WORKERS:-14}
CONFIGS=${CONFIGS:-"imagenet_lt_resnext50 imagenet_lt_resnet50"}  # split across calls if slow
DEVICE_AUGMENT=${DEVICE_AUGMENT:-1}
DTYPES=${DTYPES:-"float32 bfloat16"}
SUFFIX=""
[[ "${QUICK:-0}" == 1 ]] && SUFFIX=":quick"
source tools/device_env.sh

if [[ -d .official ]] && "$PYTHON" -c 'import torch' 2> /dev/null; then
  LGLA_REF=$PWD/.official PYTHONPATH="$PWD/tools:$PYTHONPATH" "$PYTHON" \
    tools/official_large_step_speed.py 20 cuda 64 | tee -a "$OUT/official_large.jsonl" || true
fi

for config in $CONFIGS; do
  for dtype in $DTYPES; do
    for jpeg in 256 0; do  # JPEG decode + augmentation, then arrays (augmentation only)
      "$PYTHON" -m lgla_jax.benchmark --config="configs/$config.py$SUFFIX" --synthetic \
        --synthetic_jpeg=$jpeg --steps="$STEPS" --synthetic_test=1000 \
        --config.dtype=$dtype --config.num_workers="$WORKERS" \
        | tee -a "$OUT/large.jsonl" || echo "{\"failed\": \"$config $dtype jpeg=$jpeg\"}" >> "$OUT/large.jsonl"
    done
  done
  if [[ "$DEVICE_AUGMENT" == 1 ]]; then  # the recipe after the crop in the step
    "$PYTHON" -m lgla_jax.benchmark --config="configs/$config.py$SUFFIX" --synthetic \
      --synthetic_jpeg=256 --steps="$STEPS" --synthetic_test=1000 --config.dtype=bfloat16 \
      --config.num_workers="$WORKERS" --config.augment.on_device=True \
      | tee -a "$OUT/large.jsonl" || echo "{\"failed\": \"$config device augment\"}" >> "$OUT/large.jsonl"
  fi
done
