#!/usr/bin/env bash
# Download, here, the wheels a lent GPU machine lacks for the throughput benchmark (its
# image has jax, flax, optax, orbax and Python 3.12, but not grain or ml-collections),
# into .whl/ (git-ignored through .git/info/exclude). Then run tools/device_benchmark.sh
# there with `.whl` carried. Usage: tools/device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for n in 2_17 2_27 2_28 2_31 2_34 2_35; do platforms+=(--platform "manylinux_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  grain==0.2.18 array-record==0.8.6 portpicker ml-collections==1.1.0 tensorboardX==2.6.5
ls -1 .whl
