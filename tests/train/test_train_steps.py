"""Three official training steps (model + LGLA loss + PyTorch SGD) against the golden run.

Why these tolerances. The float32 gradient of ResNet-32 at this initialisation is
ill-conditioned in its early layers: moving the input by one float32 ulp changes the
conv1 gradient by ~0.3%, while the same move in float64 changes it by 1e-12. So float32
runs agree with each other only to float32 noise, whoever computes them. Measured on the
2-core CPU (tools/official_noise_floor.py): the official PyTorch code itself, re-run here
(torch 2.13.0, float32), misses the stored step-1 parameters by 3.3x the elementwise bound
1e-4 + 1e-4|ref| and the step-3 ones by ~400x; in float64 by 3.2x / ~490x. lgla-jax in
float32: 2.4x / ~600x. The criteria below separate that noise from real mistakes:
  * the well-conditioned part (classifiers, the last block, BatchNorm statistics) after
    step 1 meets the elementwise bound (we measure 0.002x of it);
  * every other tensor's step-1 update is within 2% (relative L2; we and the official
    re-runs measure 0.6%), the whole update within 0.5% (all measure 0.24-0.28%);
  * after 3 steps the whole update is within 35% (all three re-runs: 24-25%) and the
    step losses agree (official re-runs: 29.132 / 29.209 vs stored 29.189 at step 3).
A wrong learning rate, momentum start, Nesterov term, BN momentum or loss term moves the
late layers far beyond these bounds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lgla_jax import config as config_lib
from lgla_jax import losses
from lgla_jax import models
from lgla_jax import optim
from lgla_jax.interop import convert

ELEMENTWISE_EXACT = ("linears.", "layer3s.4.", "running_")


@pytest.fixture(scope="module")
def run(golden):
  d = golden("train_steps_resnet32_e3_c100_warmuplr.npz")
  init = golden("resnet32_e3_c100.npz")  # the run's init is bit-identical to this one
  keys = [str(k) for k in d["state_dict_keys"]]
  variables = convert.variables_from_torch({k: init[k] for k in keys}, 3)
  # Model and loss built by name from the config, as a run builds them.
  config = config_lib.base_config()
  config.loss.tau = float(d["tau"])
  model = models.build(config.model, 100)
  loss_fn = losses.make(config.loss, d["cls_num_list"], 3, model.logit_scale)
  tx = optim.torch_sgd(optim.per_step_schedule(d["lr_per_step"], 1), momentum=0.9,
                       nesterov=True, weight_decay=2e-4)

  @jax.jit
  def step(params, model_state, opt_state, images, labels):
    def objective(p):
      out, updated = model.apply(p, model_state, images, train=True)
      loss, _ = loss_fn(out, labels, None, jnp.int32(1))
      return loss, (updated, out["logits"].transpose(1, 0, 2))  # official order [B, E, C]

    (loss, (new_stats, logits)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss, logits

  params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
  opt_state = tx.init(params)
  result = {"losses": [], "logits": [], "init": {k: init[k] for k in keys}}
  for k in range(3):
    images = jnp.asarray(d["batches_nchw"][k].transpose(0, 2, 3, 1))
    params, stats, opt_state, loss, logits = step(params, stats, opt_state, images,
                                                  jnp.asarray(d["targets"][k]))
    result["losses"].append(float(loss))
    result["logits"].append(np.asarray(logits))
    result[f"step{k + 1}"] = convert.torch_from_variables(
        {"params": params, **stats}, num_batches_tracked=k + 1)
  return d, keys, result


def _rel(got, ref):
  return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def test_step_losses_and_logits(run):
  d, _, r = run
  np.testing.assert_allclose(r["losses"][0], d["losses"][0], rtol=1e-5)
  np.testing.assert_allclose(r["losses"][1], d["losses"][1], rtol=2e-4)
  np.testing.assert_allclose(r["losses"][2], d["losses"][2], rtol=5e-3)
  np.testing.assert_allclose(r["logits"][0], d["logits_per_step"][0], rtol=0, atol=1e-4)


def test_state_after_step_1(run):
  d, keys, r = run
  got, init = r["step1"], r["init"]
  exact = [k for k in keys if any(s in k for s in ELEMENTWISE_EXACT) and "num_batches" not in k]
  assert len(exact) == 71  # 3 heads, 6 last-block tensors, 62 BN statistics
  for k in exact:
    ref = d[f"step1.{k}"]
    np.testing.assert_array_less(np.abs(got[k] - ref), 1e-4 + 1e-4 * np.abs(ref), err_msg=k)
  trained = [k for k in keys if "num_batches" not in k and "running_" not in k]
  for k in trained:
    limit = 2e-4 if k in exact else 2e-2  # 2e-4: weight decay alone is ~2e-4 there
    assert _rel(got[k] - init[k], d[f"step1.{k}"] - init[k]) < limit, k
  flat = lambda sd: np.concatenate([(sd[k] - init[k]).ravel() for k in trained])
  ref_flat = np.concatenate([(d[f"step1.{k}"] - init[k]).ravel() for k in trained])
  assert _rel(flat(got), ref_flat) < 5e-3
  assert int(got["backbone.bn1.num_batches_tracked"]) == int(d["step1.backbone.bn1.num_batches_tracked"])


def test_state_after_step_3(run):
  d, keys, r = run
  got, init = r["step3"], r["init"]
  trained = [k for k in keys if "num_batches" not in k and "running_" not in k]
  got_flat = np.concatenate([(got[k] - init[k]).ravel() for k in trained])
  ref_flat = np.concatenate([(d[f"step3.{k}"] - init[k]).ravel() for k in trained])
  assert _rel(got_flat, ref_flat) < 0.35
  cos = got_flat @ ref_flat / (np.linalg.norm(got_flat) * np.linalg.norm(ref_flat))
  assert cos > 0.95
