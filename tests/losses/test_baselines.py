"""The official repository's other losses against its own numbers (``other_loss_*.npz``,
made by running ``model/loss.py``): value within 1e-5 (relative), gradient w.r.t. the
logits within 1e-6, before and after the re-weighting epoch; and the same losses through
the registry, as the training step builds them."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax import config as config_lib
from lgla_jax import losses

CASES = {
    "other_loss_focal_c100_ir100_e1_b64.npz": "focal",
    "other_loss_ce_cb_c100_ir100_e1_b64.npz": "class_balanced_ce",
    "other_loss_ldam_c100_ir100_e1_b64.npz": "ldam",
    "other_loss_ldam_drw_c100_ir100_e1_b64.npz": "ldam",
    "other_loss_ride_c100_ir100_e3_b64.npz": "ride",
    "other_loss_ride_drw_c100_ir100_e3_b64.npz": "ride",
}


def _public(d):
  """The loss as a function of the logits through the public functions (official args)."""
  kwargs, counts, y = json.loads(str(d["kwargs"])), d["cls_num_list"], d["targets_B"]
  cls, epoch = str(d["loss_class"]), int(d["epoch"])
  if cls == "FocalLoss":
    return lambda z: losses.focal_loss(z[0], y, kwargs["gamma"])
  if cls == "CrossEntropyLoss":
    w = losses.class_balanced_weights(counts)
    return lambda z: losses.weighted_cross_entropy(z[0], y, w)
  if cls == "LDAMLoss":
    drw = epoch > kwargs["reweight_epoch"]
    w = losses.class_balanced_weights(counts, beta=0.9999) if drw else None
    return lambda z: losses.ldam_loss(z[0], y, counts, max_m=kwargs["max_m"], s=kwargs["s"],
                                      class_weights_C=w)
  assert cls == "RIDELoss"
  return lambda z: losses.ride_loss(z, y, counts, epoch=epoch, **kwargs)


def _check(fn, d):
  loss, grad = jax.value_and_grad(fn)(jnp.asarray(d["logits_ExBxC"]))
  np.testing.assert_allclose(float(loss), float(d["loss"]), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), d["grad_logits_ExBxC"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("fname", sorted(CASES))
def test_public_function_matches_official(golden, fname):
  _check(_public(golden(fname)), golden(fname))


def _loss_config(d):
  c = config_lib.base_config().loss
  c.name = CASES_BY_CLASS[str(d["loss_class"])]
  for key, value in json.loads(str(d["kwargs"])).items():
    if key in c:
      c[key] = type(c[key])(value)
  return c


CASES_BY_CLASS = {"FocalLoss": "focal", "CrossEntropyLoss": "class_balanced_ce",
                  "LDAMLoss": "ldam", "RIDELoss": "ride"}


@pytest.mark.parametrize("fname", sorted(CASES))
def test_registry_loss_matches_official(golden, fname):
  d = golden(fname)
  cfg = _loss_config(d)
  e = d["logits_ExBxC"].shape[0]
  fn = losses.make(cfg, d["cls_num_list"], num_experts=e, scale=30.0)
  epoch = jnp.int32(max(int(d["epoch"]), 1))
  step = jax.jit(lambda z: fn({"output": z.mean(0), "logits": z}, d["targets_B"], None, epoch)[0])
  _check(step, d)


def test_drw_switches_at_the_reweight_epoch(golden):
  """The official rule: re-weighted for epoch > reweight_epoch, as a traced epoch."""
  d = golden("other_loss_ldam_drw_c100_ir100_e1_b64.npz")
  cfg = _loss_config(d)
  fn = jax.jit(lambda z, epoch: losses.make(cfg, d["cls_num_list"], 1, 30.0)(
      {"output": z[0], "logits": z}, d["targets_B"], None, epoch)[0])
  z = jnp.asarray(d["logits_ExBxC"])
  unweighted = losses.ldam_loss(z[0], d["targets_B"], d["cls_num_list"])
  np.testing.assert_allclose(float(fn(z, 160)), float(unweighted), rtol=1e-6)
  assert abs(float(unweighted) - float(d["loss"])) > 0.1  # the weights matter here
  np.testing.assert_allclose(float(fn(z, 161)), float(d["loss"]), rtol=1e-5)


def test_class_balanced_weights_sum_to_class_count_and_beta_zero_is_uniform():
  counts = np.array([500, 100, 20, 5])
  w = losses.class_balanced_weights(counts, beta=0.999)
  assert w.shape == (4,) and np.isclose(w.sum(), 4.0) and np.all(np.diff(w) > 0)
  np.testing.assert_allclose(losses.class_balanced_weights(counts, beta=0.0), np.ones(4))
  with pytest.raises(ValueError, match="classes \\[1\\]"):
    losses.class_balanced_weights([3, 0, 2])


def test_masked_losses_equal_the_valid_subset():
  """The padded last batch: every registered loss on a masked batch equals the loss on
  its valid samples, gradient included."""
  rng = np.random.default_rng(0)
  counts = np.array([100, 80, 60, 40, 20, 10])
  z = jnp.asarray(rng.normal(0, 8, (3, 12, 6)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 6, 12))
  mask = jnp.asarray(np.arange(12) < 9)
  for name in sorted(losses.REGISTRY):
    cfg = config_lib.base_config().loss
    cfg.name, cfg.reweight_epoch = name, 1
    fn = losses.make(cfg, counts, num_experts=3, scale=30.0)
    out = lambda zz: {"output": zz.mean(0), "logits": zz}
    full = jax.value_and_grad(lambda zz: fn(out(zz), y, mask, jnp.int32(2))[0])(z)
    part = jax.value_and_grad(lambda zz: fn(out(zz), y[:9], None, jnp.int32(2))[0])(z[:, :9])
    np.testing.assert_allclose(float(full[0]), float(part[0]), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(np.asarray(full[1][:, :9]), np.asarray(part[1]), atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(np.asarray(full[1][:, 9:]), 0.0, err_msg=name)


def test_focal_with_gamma_zero_is_cross_entropy_and_finite_at_certainty():
  z = jnp.array([[50.0, -50.0], [0.3, 0.1]])
  y = jnp.array([0, 1])
  np.testing.assert_allclose(float(losses.focal_loss(z, y, 0.0)), float(losses.cross_entropy(z, y)))
  g = jax.grad(lambda zz: losses.focal_loss(zz, y, 2.0))(z)
  assert np.isfinite(np.asarray(g)).all()


def test_problems_name_the_field():
  cfg = config_lib.base_config().loss
  cfg.name = "focal"
  cfg.gamma = -1.0
  assert losses.problems(cfg, 3, True) == [("loss.gamma", "must be >= 0, got -1.0")]
  cfg.name = "lgla"
  assert losses.problems(cfg, 1, True)[0][0] == "model.num_experts"
  cfg.name = "ldam"
  assert losses.problems(cfg, 1, False)[0][0] == "model.use_norm"
  cfg.name = "nope"
  assert losses.problems(cfg, 3, True)[0][0] == "loss.name"
