import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lgla_jax import optim


def test_schedules_equal_official(golden):
  ref = golden("lr_schedules.json")
  w = ref["cifar_warmup_multistep"]
  got = optim.warmup_multistep_lr(w["base_lr"], w["epochs"], w["lr_scheduler_config"]["args"]["lr_step"],
                                  gamma=0.1, warmup_epochs=5)
  np.testing.assert_array_equal(got, w["lr_per_epoch"])
  c = ref["imagenet_lt_cosine"]
  np.testing.assert_array_equal(optim.cosine_lr(c["base_lr"], c["epochs"], 180, 0.0), c["lr_per_epoch"])
  inat = ref["other_configs"]["config_iNaturalist_resnet50_lgla.json"]
  np.testing.assert_array_equal(optim.cosine_lr(0.2, 400, 400, eta_min=1e-4), inat["lr_per_epoch"])
  places = ref["other_configs"]["config_places_lt_resnet152_lgla.json"]
  np.testing.assert_array_equal(optim.step_lr(0.01, 30, 10, 20, gamma=0.1), places["lr_per_epoch"])


def test_per_step_schedule_holds_lr_per_epoch():
  table = optim.warmup_multistep_lr(0.1, 10, [6, 8], warmup_epochs=2)
  sched = optim.per_step_schedule(table, steps_per_epoch=3)
  got = np.asarray(jax.vmap(sched)(jnp.arange(35)))
  np.testing.assert_allclose(got, np.repeat(table.astype(np.float32), 3).tolist() + [table[-1]] * 5)
  with pytest.raises(ValueError):
    optim.per_step_schedule(table, 0)


def _torch_sgd_reference(params, grads_seq, lr, m, wd, nesterov):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  buf = {}
  for t, g in enumerate(grads_seq):
    for k in p:
      d = g[k] + wd * p[k]
      buf[k] = d if t == 0 else m * buf[k] + d
      p[k] = p[k] - lr(t) * ((d + m * buf[k]) if nesterov else buf[k])
  return p


@pytest.mark.parametrize("nesterov", [True, False])
def test_torch_sgd_semantics(nesterov):
  rng = np.random.RandomState(0)
  params = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(4)]
  lr = lambda t: [0.1, 0.1, 0.05, 0.01][t]
  tx = optim.torch_sgd(lambda c: jnp.asarray([0.1, 0.1, 0.05, 0.01])[c], momentum=0.9,
                       nesterov=nesterov, weight_decay=2e-4)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  step = jax.jit(lambda p, s, g: tx.update(g, s, p))
  for g in grads:
    updates, state = step(p, state, g)
    p = optax.apply_updates(p, updates)
  ref = _torch_sgd_reference(params, grads, lr, 0.9, 2e-4, nesterov)
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), ref[k], rtol=1e-6, atol=1e-6)


def test_torch_sgd_rejects_bad_arguments():
  with pytest.raises(ValueError):
    optim.torch_sgd(0.1, momentum=0.0, nesterov=True)
  with pytest.raises(ValueError):
    optim.warmup_multistep_lr(0.1, 10, [8, 6])


def test_describe_names_the_fields_the_schedule_reads():
  from lgla_jax import config as config_lib
  o = config_lib.base_config().optim
  assert optim.describe(o) == ("warmup_multistep(lr=0.1, milestones=(320, 360), gamma=0.1, "
                               "warmup_epochs=5)")
  o.schedule = "cosine"
  assert optim.describe(o, lr=0.05) == "cosine(lr=0.05, cosine_t_max=0, cosine_eta_min=0.0)"
  o.schedule = "step"
  assert optim.describe(o) == "step(lr=0.1, step_epochs=(10, 20), gamma=0.1, warmup_epochs=5)"
  assert set(optim.SCHEDULES) == set(optim.SCHEDULE_FIELDS)
