"""The method seam: models and losses found by name, a training loop that names none.

A loss registered in ``losses`` and a model registered in ``models`` train through the
unchanged loop (a model without BatchNorm included); the step gives the loss the 1-based
epoch of its batch; the RIDE and LDAM-DRW recipes train end to end.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax import losses
from lgla_jax import models
from lgla_jax.train import loop
from lgla_jax.train import run as run_lib
from lgla_jax.data import pipeline
from lgla_jax.train import feed
from lgla_jax.train import sharding
from helpers import config_of, make_cifar10_folder


class NoNormNet(nn.Module):
  """Experts as linear heads on the pixels: no BatchNorm, no state besides params."""

  num_classes: int
  num_experts: int

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    feat_BxF = x.reshape(x.shape[0], -1)
    logits_ExBxC = jnp.stack([nn.Dense(self.num_classes, name=f"head_{e}")(feat_BxF)
                              for e in range(self.num_experts)])
    return {"output": logits_ExBxC.mean(0), "logits": logits_ExBxC,
            "feat": jnp.broadcast_to(feat_BxF, (self.num_experts,) + feat_BxF.shape)}


@pytest.fixture
def registered():
  models.register("no_norm_net", lambda m, num_classes, dtype: NoNormNet(num_classes, m.num_experts))

  @losses.register("epoch_probe")
  def _probe(cfg, counts, num_experts, scale):
    # loss = the epoch the step was given (and a zero-weight term for a gradient)
    return lambda out, labels, mask, epoch: (epoch + 0.0 * out["output"].sum(), jnp.zeros((0,)))

  yield
  del models.REGISTRY["no_norm_net"], losses.REGISTRY["epoch_probe"]


@pytest.mark.integration
def test_model_without_batchnorm_trains_checkpoints_and_resumes(registered, tmp_path):
  config = config_of("demo", **{"model.name": "no_norm_net", "loss.name": "ce", "num_epochs": 2,
                              "resume_with_changes": True})
  run = run_lib.setup(config, sharding.make_mesh(jax.devices()[:1]))
  assert run.state.model_state == {} and run.model.logit_scale == 1.0
  first = loop.train_and_evaluate(config_of("demo", **{"model.name": "no_norm_net",
                                                      "loss.name": "ce", "num_epochs": 1}),
                                   str(tmp_path))
  result = loop.train_and_evaluate(config, str(tmp_path))  # resumes after epoch 1
  assert first["final"]["epoch"] == 1 and result["final"]["epoch"] == 2
  assert 0.5 < result["final"]["top1"] <= 1  # a linear model on digit pixels learns


@pytest.mark.integration
def test_the_step_gives_the_loss_its_1_based_epoch(registered):
  config = config_of("demo", **{"loss.name": "epoch_probe"})
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config, mesh)
  it = feed.train_batches(run, 0, 2 * run.steps_per_epoch)
  state, seen = run.state, []
  for batch in it:
    state, metrics = run.steps.train(state, pipeline.to_global(batch, sharding.batch_sharding(mesh)))
    seen.append(float(metrics["loss"]))
  spe = run.steps_per_epoch
  assert seen == [1.0] * spe + [2.0] * spe


@pytest.mark.integration
@pytest.mark.parametrize("name", ["cifar100_ir100_ride", "cifar100_ir100_ldam_drw"])
def test_ride_and_ldam_drw_recipes_train_end_to_end(tmp_path, name):
  # The recipes' networks, losses (re-weighting switched on in epoch 2), schedules and
  # augmentation (RIDE: rotation), on generated CIFAR-10-shaped data.
  make_cifar10_folder(tmp_path / "data", per_class=100)
  config = config_of(name, **{"dataset.name": "cifar10", "dataset.source": "cifar_archive",
                            "dataset.data_dir": str(tmp_path / "data"),
                            "dataset.max_per_class": 100})
  assert config.loss.reweight_epoch == 1 and config.num_epochs == 2
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  final = result["final"]
  experts = 3 if "ride" in name else 1
  assert np.isfinite(final["top1"]) and len(final["experts"]) == experts
  lines = (tmp_path / "run" / "metrics.jsonl").read_text()
  assert ('"loss_expert2"' in lines) == (experts == 3)  # RIDE logs its per-expert terms
