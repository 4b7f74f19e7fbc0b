"""Long-tail bookkeeping: class counts, the official subset rule, expert regions, priors.

Everything here is plain numpy and runs once per run, outside of any jitted function.
The functions reproduce the official LGLA code (Tao0-0/LGLA @ 0d72bdb) number for number:
``imbalanced_counts`` is ``IMBALANCECIFAR10.get_img_num_per_cls``, ``long_tail_indices``
is its ``gen_imbalanced_data``, ``expert_regions`` is ``DiverseExpertLoss.get_region_points``
plus its class masks, and ``expert_log_priors`` is what ``DiverseExpertLoss.forward`` adds
to each expert's logits.
"""

from __future__ import annotations

import warnings

import numpy as np

# Added to the prior before the log, as in the official loss (keeps log finite).
LOG_PRIOR_EPS = 1e-9
# Shot groups of the official test.py: many > 100, medium 20..100, few < 20 images.
MANY_SHOT_MIN = 100
FEW_SHOT_MAX = 20


def imbalanced_counts(
    num_classes: int,
    max_per_class: float,
    imbalance_factor: float,
    kind: str = "exp",
    reverse: bool = False,
) -> list[int]:
  """Per-class training counts of a long-tailed split (the official rule).

  Args:
    num_classes: number of classes C (>= 2).
    max_per_class: images of the largest class (official ``img_max``: 5000 for CIFAR-10,
      500 for CIFAR-100, 6000 for Fashion-MNIST).
    imbalance_factor: the official ``imb_factor`` = smallest / largest, in (0, 1];
      0.01 is "IR100".
    kind: "exp" (exponential decay over the class index) or "step" (first half
      ``max_per_class``, second half ``max_per_class * imbalance_factor``).
    reverse: "exp" only: the official reversed profile (class 0 the rarest).

  Returns:
    A list of C Python ints.
  """
  if int(num_classes) != num_classes or num_classes < 2:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  if not max_per_class > 0:
    raise ValueError(f"max_per_class must be positive, got {max_per_class!r}")
  if not 0.0 < imbalance_factor <= 1.0:
    raise ValueError(
        f"imbalance_factor must lie in (0, 1] (smallest/largest class, e.g. 0.01 for "
        f"IR100), got {imbalance_factor!r}; an imbalance ratio of 100 is factor 0.01")
  num_classes = int(num_classes)
  img_max = float(max_per_class)
  if kind == "exp":
    counts = []
    for i in range(num_classes):
      exponent = ((num_classes - 1 - i) if reverse else i) / (num_classes - 1.0)
      counts.append(int(img_max * (imbalance_factor**exponent)))
  elif kind == "step":
    if reverse:
      raise ValueError("reverse=True is only defined for kind='exp'")
    half = num_classes // 2
    # Official: C//2 head and C//2 tail classes; for odd C the official list is one short,
    # here the extra class joins the tail.
    counts = [int(img_max)] * half + [int(img_max * imbalance_factor)] * (num_classes - half)
  else:
    raise ValueError(f"kind must be 'exp' or 'step', got {kind!r}")
  if min(counts) < 1:
    raise ValueError(
        f"imbalanced_counts({num_classes}, {max_per_class}, {imbalance_factor}) gives a "
        f"class with no image ({counts}); raise max_per_class or imbalance_factor")
  return counts


def long_tail_indices(labels: np.ndarray, counts, seed: int = 0) -> np.ndarray:
  """Indices of the official long-tailed subset of a balanced labelled set.

  Same sequence as the official ``gen_imbalanced_data`` after ``np.random.seed(seed)``:
  for each class in ascending label order, shuffle that class's indices and keep the
  first ``counts[k]``. Uses a private ``RandomState``, so numpy's global RNG is untouched
  (the stream is the same as the legacy global one).

  Returns:
    int64 array of selected indices, class 0's block first, in selection order.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
  classes = np.unique(labels)
  counts = [int(c) for c in counts]
  if len(counts) != len(classes):
    raise ValueError(
        f"counts has {len(counts)} entries but labels hold {len(classes)} classes")
  rng = np.random.RandomState(seed)
  selected = []
  for cls, num in zip(classes, counts):
    idx = np.where(labels == cls)[0]
    if num > len(idx):
      raise ValueError(f"class {cls} has {len(idx)} examples, fewer than the {num} asked")
    rng.shuffle(idx)
    selected.append(idx[:num])
  return np.concatenate(selected).astype(np.int64)


def _check_counts(class_counts) -> np.ndarray:
  counts = np.asarray(class_counts)
  if counts.ndim != 1 or counts.size < 2:
    raise ValueError(f"class_counts must be a 1-D list of >= 2 counts, got shape {counts.shape}")
  if not np.all(np.isfinite(counts)) or np.any(counts <= 0):
    bad = np.where(~(counts > 0))[0][:5].tolist()
    raise ValueError(
        f"class_counts must all be positive (every class needs training images); "
        f"classes {bad} are not")
  if np.any(counts != np.round(counts)):
    raise ValueError("class_counts must be whole numbers of images")
  return counts.astype(np.int64)


def region_bounds(class_counts, num_experts: int) -> np.ndarray:
  """Count intervals ``[lo, hi]`` of the E-1 region experts (official ``get_region_points``).

  Class c belongs to region r iff ``lo_r < n_c <= hi_r``. Region 0 holds the head.
  Sorting the counts ascending, a running sum is closed into a region whenever it exceeds
  ``sum(n) // (E - 1)``. E = 2 (which crashes in the official code) gives one region
  holding every class.

  Returns:
    int64 array [E-1, 2].
  """
  counts = _check_counts(class_counts)
  if int(num_experts) != num_experts or num_experts < 2:
    raise ValueError(
        f"num_experts must be an integer >= 2 (E-1 region experts plus one global "
        f"expert), got {num_experts!r}")
  num_regions = int(num_experts) - 1
  if num_regions == 1:
    return np.array([[0, counts.max()]], dtype=np.int64)
  region_size = int(counts.sum()) // num_regions
  points = []
  running = 0
  for n in np.sort(counts):
    running += int(n)
    if running > region_size:
      points.append(int(n))
      running = 0
  points = points[::-1]
  bounds = []
  for i, p in enumerate(points):
    bounds.append([p, int(counts.max()) if i == 0 else points[i - 1]])
  bounds.append([0, points[-1] if points else int(counts.max())])
  if len(bounds) != num_regions:
    raise ValueError(
        f"the official region split of these {counts.size} class counts gives only "
        f"{len(bounds)} regions, but {num_experts} experts need {num_regions}: use at most "
        f"{len(bounds) + 1} experts for this data set (the official code crashes here)")
  return np.asarray(bounds, dtype=np.int64)


def expert_regions(class_counts, num_experts: int) -> np.ndarray:
  """Class masks of the region experts: bool ``[E-1, C]`` (official ``mask_cls``).

  A region can be empty (e.g. CIFAR-10-LT with 4 experts gets the interval
  (5000, 5000]); that expert then gets a constant logit adjustment, as in the official
  code, and a ``UserWarning`` says so.
  """
  counts = _check_counts(class_counts)
  bounds = region_bounds(counts, num_experts)
  masks = (counts[None, :] > bounds[:, :1]) & (counts[None, :] <= bounds[:, 1:])
  empty = np.where(~masks.any(axis=1))[0]
  if empty.size:
    warnings.warn(
        f"region expert(s) {empty.tolist()} own no class under the official split "
        f"(regions {bounds.tolist()}); they get a constant logit adjustment, as in the "
        f"official code. Use fewer experts to give every expert a region.",
        UserWarning, stacklevel=2)
  return masks


def class_prior(class_counts) -> np.ndarray:
  """float32 ``n / sum(n)``: computed in float64 then cast, as the official loss does."""
  counts = _check_counts(class_counts)
  return (counts / counts.sum()).astype(np.float32)


def effective_tau(num_experts: int, tau: float) -> float:
  """The official loss forces tau = 1 when there are only two experts."""
  return 1.0 if num_experts <= 2 else float(tau)


def expert_log_priors(class_counts, num_experts: int, tau: float, regions=None) -> np.ndarray:
  """What each expert's logits get added in training: float32 ``[E, C]``.

  Rows 0..E-2 are the Local Logit Adjustments: ``log(prior)`` on the expert's own classes
  and ``log(max prior)`` elsewhere. The last row is the Global one: ``tau * log(prior)``.
  With E = 2, tau is 1 (the official constructor forces it; a warning says so).
  """
  prior = class_prior(class_counts)
  if regions is None:
    regions = expert_regions(class_counts, num_experts)
  regions = np.asarray(regions, dtype=bool)
  if regions.shape != (num_experts - 1, prior.size):
    raise ValueError(f"regions must have shape {(num_experts - 1, prior.size)}, got {regions.shape}")
  tau_eff = effective_tau(num_experts, tau)
  if tau_eff != tau:
    warnings.warn(f"num_experts=2: tau={tau} is replaced by 1.0, as in the official loss",
                  UserWarning, stacklevel=2)
  eps = np.float32(LOG_PRIOR_EPS)
  local = np.where(regions, prior[None, :], prior.max())
  rows = [np.log(local + eps), (np.log(prior + eps) * np.float32(tau_eff))[None, :]]
  return np.concatenate(rows, axis=0).astype(np.float32)


def shot_groups(class_counts, many_shot_min: int = MANY_SHOT_MIN,
                few_shot_max: int = FEW_SHOT_MAX) -> dict[str, np.ndarray]:
  """Boolean class masks of the many (> ``many_shot_min``) / medium / few (< ``few_shot_max``)
  groups; the defaults are the official 100 / 20."""
  counts = _check_counts(class_counts)
  if few_shot_max > many_shot_min + 1:
    raise ValueError(f"few-shot threshold {few_shot_max} above the many-shot one {many_shot_min}")
  return {
      "many": counts > many_shot_min,
      "medium": (counts >= few_shot_max) & (counts <= many_shot_min),
      "few": counts < few_shot_max,
  }


def classic_numpy_argsort(values) -> np.ndarray:
  """``np.argsort(values)`` as numpy ran it before its SIMD sorts (numpy < 1.25, the official
  code's environment): an introsort over indices, median-of-three pivots, insertion sort
  below 17 elements, heapsort past the depth limit.

  Equal values are *not* kept in input order, and numpy versions with AVX-512 or AVX2
  sorts order them differently again, so a rule built on ``argsort`` of counts with ties
  (the official Places-LT relabelling) is reproduced here, independent of the machine.
  """
  v = np.asarray(values).tolist()
  order = list(range(len(v)))
  stack = []
  lo, hi, depth = 0, len(v) - 1, 2 * (max(len(v), 1).bit_length() - 1)
  while True:
    if depth < 0:
      _heapsort_range(v, order, lo, hi)
    else:
      while hi - lo > 15:  # numpy partitions ranges of more than 16
        mid = lo + ((hi - lo) >> 1)
        for a, b in ((mid, lo), (hi, mid), (mid, lo)):  # median of three into order[mid]
          if v[order[a]] < v[order[b]]:
            order[a], order[b] = order[b], order[a]
        pivot = v[order[mid]]
        i, j = lo, hi - 1
        order[mid], order[j] = order[j], order[mid]
        while True:
          i += 1
          while v[order[i]] < pivot:
            i += 1
          j -= 1
          while pivot < v[order[j]]:
            j -= 1
          if i >= j:
            break
          order[i], order[j] = order[j], order[i]
        order[i], order[hi - 1] = order[hi - 1], order[i]
        depth -= 1
        if i - lo < hi - i:  # the larger side waits on the stack
          stack.append((i + 1, hi, depth))
          hi = i - 1
        else:
          stack.append((lo, i - 1, depth))
          lo = i + 1
      for i in range(lo + 1, hi + 1):  # insertion sort of the small range
        item, j = order[i], i
        while j > lo and v[item] < v[order[j - 1]]:
          order[j] = order[j - 1]
          j -= 1
        order[j] = item
    if not stack:
      return np.asarray(order, np.int64)
    lo, hi, depth = stack.pop()


def _heapsort_range(v, order, lo, hi):
  """numpy's index heapsort of ``order[lo..hi]`` (1-based heap over that slice)."""
  a = order[lo:hi + 1]
  n = len(a)

  def sift(i, n, item):
    j = 2 * i
    while j <= n:
      if j < n and v[a[j - 1]] < v[a[j]]:
        j += 1
      if v[item] < v[a[j - 1]]:
        a[i - 1] = a[j - 1]
        i, j = j, 2 * j
      else:
        break
    a[i - 1] = item

  for start in range(n >> 1, 0, -1):
    sift(start, n, a[start - 1])
  while n > 1:
    item = a[n - 1]
    a[n - 1] = a[0]
    n -= 1
    sift(1, n, item)
  order[lo:hi + 1] = a


def frequency_class_map(class_counts) -> np.ndarray:
  """``class_map[original_label]`` = the label the official Places-LT loader gives it: classes
  renumbered by training images, most first (``np.argsort(-counts)``, ties as numpy < 1.25
  broke them)."""
  counts = np.asarray(class_counts, np.int64)
  class_map = np.empty(len(counts), np.int64)
  class_map[classic_numpy_argsort(-counts)] = np.arange(len(counts))
  return class_map
