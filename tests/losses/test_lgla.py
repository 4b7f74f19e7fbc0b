import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax import long_tail
from lgla_jax import losses

LOSS_FILES = [
    "lgla_loss_cifar100_ir100_e3_tau2.5_b64.npz", "lgla_loss_cifar100_ir100_e3_tau2.5_b7.npz",
    "lgla_loss_cifar100_ir100_e4_tau2.5_b64.npz", "lgla_loss_cifar10_ir100_e3_tau3_b64.npz"]


def _official_unclamped(d):
  """The official formula written the official way: unclamped acos, log(softmax)."""
  z, y = jnp.asarray(d["logits"]), jnp.asarray(d["targets"])
  counts, e = d["cls_num_list"], int(d["num_experts"])
  regions = long_tail.expert_regions(counts, e)
  theta = jnp.arccos(jnp.take_along_axis(z, jnp.broadcast_to(y[None, :, None], z.shape[:2] + (1,)), -1)[..., 0] / 30.0)
  w = np.ones(theta.shape, np.float32)
  for r in range(e - 1):
    m = regions[r][d["targets"]]
    if m.any():
      delta = np.asarray(theta)[:, m] - np.asarray(theta)[:, m].mean(axis=1, keepdims=True)
      w[:, m] = np.where(delta < 0, 1.0, 1.0 + delta)
  adj = z + long_tail.expert_log_priors(counts, e, float(d["tau"]))[:, None]
  logp = jnp.log(jax.nn.softmax(adj, -1))
  picked = jnp.take_along_axis(logp, jnp.broadcast_to(y[None, :, None], z.shape[:2] + (1,)), -1)[..., 0]
  return -(w * picked).mean(-1).sum()


@pytest.mark.parametrize("fname", LOSS_FILES)
def test_loss_and_gradient_match_official(golden, fname):
  d = golden(fname)
  counts, tau = d["cls_num_list"], float(d["tau"])
  fn = lambda z: losses.lgla_loss(z, d["targets"], counts, tau=tau)
  loss, grad = jax.value_and_grad(fn)(jnp.asarray(d["logits"]))
  np.testing.assert_allclose(float(loss), float(d["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(d["loss_f64"]), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), d["grad_logits"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("fname", LOSS_FILES)
def test_internals_match_official(golden, fname):
  d = golden(fname)
  counts, e, tau = d["cls_num_list"], int(d["num_experts"]), float(d["tau"])
  w = losses.aaw_weights(d["logits"], d["targets"], counts)
  assert w.shape == (e, d["targets"].size)
  np.testing.assert_allclose(np.asarray(w), d["aaw_weight"], rtol=0, atol=1e-6)
  regions = long_tail.expert_regions(counts, e)
  priors = long_tail.expert_log_priors(counts, e, tau)
  per_expert = losses.lgla_expert_losses(d["logits"], d["targets"], log_priors_ExC=priors,
                                         regions_RxC=regions)
  np.testing.assert_allclose(np.asarray(per_expert), d["per_expert_loss"], rtol=1e-5)


@pytest.mark.parametrize("fname", LOSS_FILES)
def test_clamp_and_stable_log_softmax_change_no_finite_result(golden, fname):
  d = golden(fname)
  ours = losses.lgla_loss(d["logits"], d["targets"], d["cls_num_list"], tau=float(d["tau"]))
  np.testing.assert_allclose(float(ours), float(_official_unclamped(d)), rtol=2e-7)


def test_no_gradient_through_aaw_weights(golden):
  d = golden(LOSS_FILES[0])
  g = jax.grad(lambda z: losses.aaw_weights(z, d["targets"], d["cls_num_list"]).sum())(
      jnp.asarray(d["logits"]))
  assert float(jnp.abs(g).max()) == 0.0


def test_nan_hazards_are_gone():
  counts = long_tail.imbalanced_counts(100, 500, 0.01)
  rng = np.random.RandomState(0)
  z = rng.uniform(-0.95, 0.95, (3, 16, 100)).astype(np.float32) * 30
  y = rng.randint(0, 100, 16)
  z_out = z.copy()
  z_out[0, np.arange(16), y] = 30.0001  # cosine above 1: official acos gives NaN
  z_wide = z.copy()
  z_wide[1, :, 0] = 150.0  # logit spread > 104: official log(softmax) gives -inf * 0
  for bad in (z_out, z_wide):
    loss, grad = jax.value_and_grad(lambda q: losses.lgla_loss(q, y, counts, tau=2.5))(jnp.asarray(bad))
    assert np.isfinite(float(loss)) and bool(jnp.all(jnp.isfinite(grad)))


def test_loss_jits_with_precomputed_adjustments(golden):
  d = golden(LOSS_FILES[2])
  counts, e = d["cls_num_list"], int(d["num_experts"])
  regions = long_tail.expert_regions(counts, e)
  priors = long_tail.expert_log_priors(counts, e, float(d["tau"]))

  @jax.jit
  def step(z, y):
    return losses.lgla_expert_losses(z, y, log_priors_ExC=priors, regions_RxC=regions).sum()

  np.testing.assert_allclose(float(step(d["logits"], d["targets"])), float(d["loss"]), rtol=1e-5)
  with pytest.raises(TypeError, match="concrete"):
    jax.jit(lambda z, c: losses.lgla_loss(z, d["targets"], c, tau=2.5))(d["logits"], counts)


def test_two_experts_train():
  counts = long_tail.imbalanced_counts(10, 5000, 0.01)
  rng = np.random.RandomState(1)
  z = jnp.asarray(rng.uniform(-0.9, 0.9, (2, 32, 10)).astype(np.float32) * 30)
  y = jnp.asarray(rng.randint(0, 10, 32))
  with pytest.warns(UserWarning):
    loss, g = jax.value_and_grad(lambda q: losses.lgla_loss(q, y, counts, tau=3.0))(z)
  assert np.isfinite(float(loss)) and float(jnp.abs(g).sum()) > 0


def test_baselines():
  rng = np.random.RandomState(2)
  z = rng.normal(size=(8, 5)).astype(np.float32)
  y = rng.randint(0, 5, 8)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  np.testing.assert_allclose(float(losses.cross_entropy(z, y)), -logp[np.arange(8), y].mean(), rtol=1e-6)
  counts = [50, 20, 10, 5, 2]
  prior = np.asarray(counts, np.float64) / sum(counts)
  za = z + 1.5 * np.log(prior)
  logpa = za - np.log(np.exp(za).sum(-1, keepdims=True))
  np.testing.assert_allclose(float(losses.logit_adjusted_cross_entropy(z, y, counts, tau=1.5)),
                             -logpa[np.arange(8), y].mean(), rtol=1e-5)


def test_masked_losses_equal_losses_on_the_valid_samples():
  # A padded incomplete batch: the masked loss (AAW region means included) must be the
  # loss of the valid samples alone, whatever the padding holds.
  counts = long_tail.imbalanced_counts(20, 50, 0.1)
  regions = long_tail.expert_regions(counts, 3)
  priors = long_tail.expert_log_priors(counts, 3, 2.0, regions=regions)
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.uniform(-25, 25, (3, 12, 20)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 20, 12))
  mask = jnp.arange(12) < 7
  kw = dict(log_priors_ExC=priors, regions_RxC=regions)
  f = lambda z, y, m=None: losses.lgla_expert_losses(z, y, mask_B=m, **kw)
  np.testing.assert_allclose(f(logits, labels, mask), f(logits[:, :7], labels[:7]), rtol=1e-6)
  g_masked = jax.grad(lambda z: f(z, labels, mask).sum())(logits)
  g_valid = jax.grad(lambda z: f(z, labels[:7]).sum())(logits[:, :7])
  np.testing.assert_allclose(g_masked[:, :7], g_valid, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(g_masked[:, 7:]).max()) == 0.0
  np.testing.assert_allclose(losses.cross_entropy(logits[0], labels, mask),
                             losses.cross_entropy(logits[0, :7], labels[:7]), rtol=1e-6)
  np.testing.assert_allclose(
      losses.logit_adjusted_cross_entropy(logits[0], labels, counts, tau=1.5, mask_B=mask),
      losses.logit_adjusted_cross_entropy(logits[0, :7], labels[:7], counts, tau=1.5), rtol=1e-6)
