"""The worked examples of docs/design.md ("Adding things"): a new loss, a new augmentation
recipe and a new in-memory data source, each registered where its registry lives, then a
run that uses all three. In the library each would be written in the files the docstring
of its test names; here they are registered from the test (and removed after it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax import errors, long_tail, losses
from lgla_jax.augment import recipes
from lgla_jax.config import overrides
from lgla_jax.config.validate import validate
from lgla_jax.data import catalog, pipeline, registry, sources
from lgla_jax.data.splits import ArrayData
from lgla_jax.train import feed, sharding
from lgla_jax.train import run as run_lib
from helpers import assert_same_on_one_and_eight_devices, config_of


@pytest.fixture
def balanced_softmax(monkeypatch):
  """A new loss. In the library: one builder in ``losses/baselines.py`` (1 file; a test)."""
  monkeypatch.setitem(losses.REGISTRY, "balanced_softmax", None)  # removed after the test

  @losses.register("balanced_softmax")  # reads no config field
  def _build(cfg, counts, num_experts, scale):
    log_prior_C = np.log(long_tail.class_prior(counts)).astype(np.float32)

    def loss_fn(output, labels_B, mask_B, epoch):  # Ren et al., 2020: CE on logits + log prior
      logits = losses.at_least_f32(output["output"]) + log_prior_C
      return losses.cross_entropy(logits, labels_B, mask_B), losses.no_expert_terms()

    return loss_fn

  return "balanced_softmax"


@pytest.fixture
def flip_only(monkeypatch):
  """A new recipe. In the library: the host function in ``augment/cifar_host.py``, the
  device one in ``augment/cifar_device.py`` and ``register`` in ``augment/recipes.py``
  (3 files)."""

  def host(images, rng, params, *, positions, total, image_size, crop_only):
    flip = (rng.random(total) < 0.5)[positions]  # drawn for the global batch
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)

  def device(images_BxHxWxC, keys_B, params):
    one = lambda img, key: jnp.where(jax.random.bernoulli(key), img[:, ::-1], img)
    return jax.vmap(one)(images_BxHxWxC, keys_B)

  monkeypatch.setitem(recipes.RECIPES, "flip_only", None)
  recipes.register("flip_only", fields=("flip",), on_files=False, host=host, device=device)
  return "flip_only"


@pytest.fixture
def toy_source(monkeypatch):
  """A new in-memory data source and the data set it reads. In the library: the reader in
  ``data/readers.py`` and the entry in ``data/catalog.py`` (2 files)."""
  monkeypatch.setitem(registry.SOURCES, "toy_arrays", None)

  @registry.register("toy_arrays")  # reads the subset fields only (no files)
  def _read(d):
    rng = np.random.default_rng(0)
    make = lambda n: ArrayData(rng.integers(0, 256, (10 * n, 16, 16, 3), dtype=np.uint8),
                               np.repeat(np.arange(10), n))
    return make(30), make(5)

  monkeypatch.setitem(catalog.DATASETS, "toy",
                      catalog.DatasetInfo(10, ("toy_arrays",), train_per_class=30))
  return "toy"


def test_a_new_loss_is_found_by_name_and_checked(balanced_softmax):
  config = config_of("demo", **{"loss.name": balanced_softmax})
  validate(config)
  with pytest.raises(errors.ConfigError, match="does not read it"):
    overrides.check(config, ["loss.tau"])  # lgla's field, not this loss's
  counts = long_tail.imbalanced_counts(10, 50, 0.1)
  logits = jax.random.normal(jax.random.PRNGKey(0), (6, 10))
  labels = jnp.arange(6)
  fn = losses.make(config.loss, counts, 3, 30.0)
  loss, per_expert = fn({"output": logits}, labels, None, 1)
  want = losses.logit_adjusted_cross_entropy(logits, labels, counts, tau=1.0)  # the same loss
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
  assert per_expert.shape == (0,)


def test_a_new_recipe_runs_on_the_host_and_on_the_device(flip_only):
  config = config_of("demo", **{"augment.recipe": flip_only})
  validate(config)
  with pytest.raises(errors.ConfigError, match="does not read it"):
    overrides.check(config, ["augment.cutout"])
  images = np.random.default_rng(1).integers(0, 256, (8, 6, 6, 3), dtype=np.uint8)
  batch = {"image": images, "label": np.zeros(8, np.int64), "mask": np.ones(8, bool), "step": 3}
  out = pipeline.AugmentBatch(0, flip_only, recipes.params(config.augment), 8).map(batch)["image"]
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
  assert 0 < sum(flipped) < 8
  assert all(f or np.array_equal(o, i) for f, o, i in zip(flipped, out, images))
  assert_same_on_one_and_eight_devices(images, config.augment)


def test_a_new_source_is_read_and_made_long_tailed(toy_source):
  config = config_of("demo", **{"dataset.name": toy_source, "dataset.source": "toy_arrays",
                                "dataset.max_per_class": None, "dataset.imbalance_factor": 0.1})
  validate(config)
  splits = sources.load(config.dataset)
  assert splits.class_counts.tolist() == long_tail.imbalanced_counts(10, 30, 0.1)
  assert len(splits.test.labels) == 50
  with pytest.raises(errors.ConfigError, match="toy can be read from"):
    validate(config_of("demo", **{"dataset.name": toy_source}))  # (sklearn does not read it)


def test_a_run_with_the_new_loss_recipe_and_source(balanced_softmax, flip_only, toy_source):
  config = config_of("demo", "quick", **{
      "loss.name": balanced_softmax, "augment.recipe": flip_only, "dataset.name": toy_source,
      "dataset.source": "toy_arrays", "dataset.max_per_class": None,
      "dataset.imbalance_factor": 0.1})
  run = run_lib.setup(config, sharding.make_mesh(jax.devices()[:1]))
  assert run.placement.augment_on_device  # an in-memory recipe: in the step
  _, batch = next(iter(feed.dispatches(run, 0, 1)))
  _, metrics = run.steps.train(run.state, batch)
  assert np.isfinite(float(metrics["loss"]))
