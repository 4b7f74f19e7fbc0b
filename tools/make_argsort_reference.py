"""Write tests/fixtures/data/numpy_sort/argsort_numpy124.npz: ``np.argsort`` outputs of numpy 1.24.4
(before its SIMD sorts, as the official code ran), the reference of
``long_tail.classic_numpy_argsort``.

Run it with numpy 1.24.4 first on the path, e.g.::

  pip download numpy==1.24.4 --no-deps -d /tmp/w && python -m zipfile -e /tmp/w/numpy-1.24.4-*.whl /tmp/np124
  PYTHONPATH=/tmp/np124 python tools/make_argsort_reference.py
"""

import numpy as np

assert np.__version__ == "1.24.4", np.__version__
rng = np.random.RandomState(0)
arrays = {}
# Places-LT-like: 365 classes, 4980 down to 5 images, many tied counts.
arrays["places_like"] = -np.maximum(5, (4980 * rng.pareto(1.2, 365) / 40).astype(np.int64))
for k in range(40):
  n = int(rng.randint(1, 800))
  arrays[f"random_{k}"] = rng.randint(0, int(rng.randint(1, 60)), n).astype(np.int64)
out = {}
for name, x in arrays.items():
  out[f"{name}/values"] = x
  out[f"{name}/quicksort"] = np.argsort(x)
  out[f"{name}/heapsort"] = np.argsort(x, kind="heapsort")
np.savez_compressed("tests/fixtures/data/numpy_sort/argsort_numpy124.npz", **out)
print(len(arrays), "arrays")
