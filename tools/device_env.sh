# Sourced by the device check scripts: the wheels the GPU image lacks (.whl/, from
# tools/device_wheels.sh) installed into /tmp/site, the tree on PYTHONPATH, and what the
# machine is, in $OUT/devices.txt. Needs PYTHON and OUT.
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee "$OUT/devices.txt"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv >> "$OUT/devices.txt"
true
