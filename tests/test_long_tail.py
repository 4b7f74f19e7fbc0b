import warnings

import numpy as np
import pytest

from lgla_jax import long_tail
from lgla_jax.data import readers

CIFAR = {"cifar10": (10, 5000), "cifar100": (100, 500)}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_imbalanced_counts_equal_official(golden, name):
  ref = golden("imbalance_counts.json")[name]
  c, img_max = CIFAR[name]
  n_checked = 0
  for kind, reverse in (("exp", False), ("step", False), ("exp_reverse", True)):
    for factor, counts in ref[kind].items():
      got = long_tail.imbalanced_counts(c, img_max, float(factor),
                                        kind="exp" if reverse else kind, reverse=reverse)
      assert got == counts, (name, kind, factor)
      n_checked += 1
  assert n_checked == 12
  assert sum(long_tail.imbalanced_counts(100, 500, 0.01)) == 10847


def test_imbalanced_counts_rejects_bad_input():
  with pytest.raises(ValueError, match="imbalance_factor"):
    long_tail.imbalanced_counts(10, 5000, 100)
  with pytest.raises(ValueError, match="imbalance_factor"):
    long_tail.imbalanced_counts(10, 5000, 0.0)
  with pytest.raises(ValueError, match="kind"):
    long_tail.imbalanced_counts(10, 5000, 0.1, kind="linear")
  with pytest.raises(ValueError, match="num_classes"):
    long_tail.imbalanced_counts(1, 5000, 0.1)
  with pytest.raises(ValueError, match="no image"):
    long_tail.imbalanced_counts(10, 50, 0.001)


def test_long_tail_indices_match_official_on_fashion_mnist(golden):
  ref = golden("fmnist_lt_ir100_indices.npz")
  labels = readers.read_idx(
      f"{readers.fashion_mnist_dir()}/train-labels-idx1-ubyte.gz").astype(np.int64)
  counts = long_tail.imbalanced_counts(10, 6000, 0.01)
  assert counts == ref["cls_num_list"].tolist()
  state = np.random.get_state()[1].copy()
  idx = long_tail.long_tail_indices(labels, counts, seed=0)
  np.testing.assert_array_equal(idx, ref["indices"])
  np.testing.assert_array_equal(labels[idx], ref["labels"])
  # numpy's global RNG is left alone.
  np.testing.assert_array_equal(np.random.get_state()[1], state)
  images = readers.read_idx(f"{readers.fashion_mnist_dir()}/train-images-idx3-ubyte.gz")
  assert int(images[idx].astype(np.int64).sum()) == int(ref["selected_pixel_sum"])


def test_long_tail_indices_errors():
  labels = np.repeat(np.arange(3), 5)
  with pytest.raises(ValueError, match="fewer"):
    long_tail.long_tail_indices(labels, [6, 1, 1])
  with pytest.raises(ValueError, match="3 classes"):
    long_tail.long_tail_indices(labels, [5, 1])


@pytest.mark.parametrize("fname", [
    "lgla_loss_cifar100_ir100_e3_tau2.5_b64.npz", "lgla_loss_cifar100_ir100_e4_tau2.5_b64.npz",
    "lgla_loss_cifar10_ir100_e3_tau3_b64.npz", "lgla_loss_cifar100_ir100_e3_tau2.5_b7.npz"])
def test_regions_and_priors_match_official(golden, fname):
  d = golden(fname)
  counts, e, tau = d["cls_num_list"], int(d["num_experts"]), float(d["tau"])
  np.testing.assert_array_equal(long_tail.region_bounds(counts, e), d["region_points"])
  np.testing.assert_array_equal(long_tail.expert_regions(counts, e), d["class_masks"])
  np.testing.assert_array_equal(long_tail.class_prior(counts), d["prior"])
  priors = long_tail.expert_log_priors(counts, e, tau)
  assert priors.dtype == np.float32 and priors.shape == (e, counts.size)
  # float32 log differs from torch's by at most an ulp.
  np.testing.assert_allclose(priors, d["log_prior_adj"], rtol=2e-7, atol=0)


def test_region_edge_cases_follow_official(golden):
  edge = golden("loss_edge_cases.json")["grid"]
  checked = 0
  for name, case in edge.items():
    ds, ir, e = name.split("_")
    c, img_max = CIFAR[ds]
    counts = long_tail.imbalanced_counts(c, img_max, 1.0 / int(ir[2:]))
    e = int(e[1:])
    if e == 2:  # official crashes; ours: one region holding all classes
      assert long_tail.expert_regions(counts, 2).tolist() == [[True] * c]
      continue
    if not case["forward"]["ok"]:  # fewer regions than region experts
      with pytest.raises(ValueError, match="regions"):
        long_tail.expert_regions(counts, e)
      continue
    with warnings.catch_warnings(record=True) as w:
      warnings.simplefilter("always")
      masks = long_tail.expert_regions(counts, e)
    assert masks.sum(axis=1).tolist() == case["class_mask_sizes"], name
    assert long_tail.region_bounds(counts, e).tolist() == case["region_points"], name
    assert bool(w) == bool(case["empty_class_mask_for_expert"]), name
    checked += 1
  assert checked >= 10


def test_empty_region_gets_constant_adjustment_and_warns():
  counts = long_tail.imbalanced_counts(10, 5000, 0.01)
  with pytest.warns(UserWarning, match="own no class"):
    priors = long_tail.expert_log_priors(counts, 4, 3.0)
  prior = long_tail.class_prior(counts)
  np.testing.assert_allclose(priors[0], np.log(prior.max() + np.float32(1e-9)))
  assert np.all(priors[0] == priors[0][0])


def test_two_experts_supported():
  counts = long_tail.imbalanced_counts(100, 500, 0.01)
  with pytest.warns(UserWarning, match="tau"):
    priors = long_tail.expert_log_priors(counts, 2, 2.5)
  logp = np.log(long_tail.class_prior(counts) + np.float32(1e-9))
  np.testing.assert_allclose(priors, np.stack([logp, logp]), rtol=1e-7)


def test_invalid_region_inputs():
  with pytest.raises(ValueError, match="positive"):
    long_tail.expert_regions([10, 0, 3], 3)
  with pytest.raises(ValueError, match="num_experts"):
    long_tail.expert_regions([10, 5, 3], 1)
  with pytest.raises(ValueError, match="at most"):
    long_tail.expert_regions(long_tail.imbalanced_counts(10, 5000, 0.01), 7)


def test_shot_groups_equal_official(golden):
  ref = golden("shot_splits.json")
  checked = 0
  for key, groups in ref.items():
    if not isinstance(groups, dict) or "many" not in groups:
      continue
    ds, ir = key.split("_")[:2]
    c, img_max = CIFAR[ds]
    counts = long_tail.imbalanced_counts(c, img_max, 1.0 / int(ir[2:]))
    got = long_tail.shot_groups(counts)
    for g in ("many", "medium", "few"):
      assert np.where(got[g])[0].tolist() == groups[g], (key, g)
    checked += 1
  assert checked == 4


def _numpy124_reference():
  import pathlib
  path = pathlib.Path(__file__).parent / "fixtures/data/numpy_sort/argsort_numpy124.npz"
  ref = np.load(path)  # written by tools/make_argsort_reference.py under numpy 1.24.4
  return ref, sorted({k.split("/")[0] for k in ref.files})


def test_classic_argsort_equals_numpy_before_its_simd_sorts():
  ref, names = _numpy124_reference()
  assert len(names) == 41
  for name in names:
    values = ref[f"{name}/values"]
    np.testing.assert_array_equal(long_tail.classic_numpy_argsort(values),
                                  ref[f"{name}/quicksort"], err_msg=name)
    order = list(range(len(values)))
    long_tail._heapsort_range(values.tolist(), order, 0, len(values) - 1)
    np.testing.assert_array_equal(order, ref[f"{name}/heapsort"], err_msg=name)


def test_frequency_class_map_is_the_official_places_relabelling():
  ref, _ = _numpy124_reference()
  counts = -ref["places_like/values"]  # the official map is built from np.argsort(-counts)
  class_map = long_tail.frequency_class_map(counts)
  np.testing.assert_array_equal(class_map[ref["places_like/quicksort"]], np.arange(365))
  assert np.all(np.diff(counts[np.argsort(class_map)]) <= 0)  # most images first
  assert len(set(counts.tolist())) < 300  # the reference has ties, where the order matters
