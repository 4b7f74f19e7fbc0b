"""Replica runs: R seeds (and taus) in one vmapped step equal R single runs."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from lgla_jax.train import loop
from lgla_jax.train import resume
from lgla_jax.train import run as run_lib
from lgla_jax.report import replicas as replica_reports
from lgla_jax.train import checkpoint
from lgla_jax.train import evaluate_checkpoint
from lgla_jax.train import feed
from lgla_jax.train import sharding
from lgla_jax.train import state as state_lib
from lgla_jax.train import steps as steps_lib
from helpers import config_of


def _steps(config, devices, n):
  """``n`` training steps through the loop's own batches and dispatches; per-step losses
  (stacked per replica) and the final state on the host."""
  run = run_lib.setup(config, sharding.make_mesh(jax.devices()[:devices]))
  state, losses, chunked = run.state, [], run.config.steps_per_dispatch > 1
  for k, batch in feed.dispatches(run, 0, n):
    state, metrics = (run.steps.train_chunk if chunked else run.steps.train)(state, batch)
    loss = np.asarray(metrics["loss"])
    losses.extend(loss[:k] if chunked else [loss])
  return np.stack(losses), jax.device_get(state), run


def _assert_replica_equals(stacked, k, single, atol):
  # Parameters and BatchNorm statistics, as test_one_and_eight_devices_agree (the momentum
  # buffers hold the raw gradients, where a tipped switch shows 100x larger).
  for part in ("params", "model_state"):
    for a, b in zip(jax.tree.leaves(getattr(stacked, part)), jax.tree.leaves(getattr(single, part))):
      np.testing.assert_allclose(np.asarray(a)[k], np.asarray(b), rtol=0, atol=atol)


@pytest.mark.integration
@pytest.mark.parametrize("placement", [
    # host batches and augmentation, one step per dispatch, replicas one after the other
    {"dataset.on_device": False, "replicas.mode": "sequential"},
    # device batches and augmentation, two-step chunks, replicas vmapped
    {"dataset.on_device": True, "augment.on_device": True, "steps_per_dispatch": 2,
     "replicas.mode": "vmap"},
    # device batches, each replica's own program side by side
    {"dataset.on_device": True, "augment.on_device": True, "replicas.mode": "unrolled"}])
def test_each_replica_equals_the_single_run_with_its_seed_tau_and_lr(placement):
  _check_replicas_equal_single_runs(placement)


@pytest.mark.integration
def test_replica_chunks_in_the_accelerator_loop_equal_the_single_runs(monkeypatch):
  """The accelerators' default (vmapped replicas, a chunk as a scan with a cond per step),
  run on the CPU, whose own chunks are unrolled."""
  monkeypatch.setattr(steps_lib, "unrolled_chunks", lambda mesh: False)
  _check_replicas_equal_single_runs({"dataset.on_device": True, "augment.on_device": True,
                                     "steps_per_dispatch": 2, "replicas.mode": "vmap"})


_SINGLE_RUNS = {}  # (fields, seed, tau, lr) -> a single run's losses and final state


def _check_replicas_equal_single_runs(placement):
  # Four steps (two dispatches of two-step chunks) at a small learning rate: early LGLA
  # training is chaotic in float32, and at lr 0.01 one ulp of difference in the first step
  # (a vmapped chunk compiles to other fusions) tipped a few ReLUs and moved a few weights
  # by 8e-5 after the second. At 0.002 / 0.001 every placement measured within 1.2e-7 of
  # the single runs after two steps, and within the 2e-6 below after four.
  common = {"optim.lr": 0.002, **placement}
  losses, state, run = _steps(config_of("demo", **common, **{
      "replicas.seeds": (0, 1), "replicas.tau": (2.0, 3.0), "replicas.lr": (0.002, 0.001)}), 1, 4)
  assert losses.shape == (4, 2) and int(state.step) == 4
  assert run.config.replicas.mode == placement["replicas.mode"]
  single_fields = {k: v for k, v in common.items() if not k.startswith("replicas.")}
  for k, (seed, tau, lr) in enumerate([(0, 2.0, 0.002), (1, 3.0, 0.001)]):
    key = (tuple(sorted(single_fields.items())), seed, tau, lr)  # (shared by the chunk forms)
    if key not in _SINGLE_RUNS:
      _SINGLE_RUNS[key] = _steps(config_of("demo", **{**single_fields, "optim.lr": lr},
                                         seed=seed, **{"loss.tau": tau}), 1, 4)[:2]
    single_losses, single = _SINGLE_RUNS[key]
    np.testing.assert_allclose(losses[:, k], single_losses, rtol=1e-6)
    _assert_replica_equals(state, k, single, atol=2e-6)
  assert not np.allclose(losses[:, 0], losses[:, 1])  # the replicas do differ


@pytest.mark.integration
def test_one_learning_rate_for_every_replica_is_the_rate_they_train_with():
  """``replicas.lr`` with one value for all replicas replaces ``optim.lr`` (0.01 here): the
  run's optimizer (what its step and state are built with) is the one of rate 0.002."""
  from lgla_jax import optim
  config = config_of("demo", **{"optim.lr": 0.01, "replicas.seeds": (0, 1),
                              "replicas.lr": (0.002, 0.002)})
  run = run_lib.setup(config, sharding.make_mesh(jax.devices()[:1]))
  config.optim.lr = 0.002
  tx, lr_table = optim.make_optimizer(config.optim, config.num_epochs, run.steps_per_epoch)
  np.testing.assert_allclose(run.lr_table, lr_table)
  params = {"w": np.linspace(-1.0, 1.0, 6, dtype=np.float32)}
  grads = {"w": np.linspace(0.5, -0.5, 6, dtype=np.float32)}
  got = run.tx.update(grads, run.tx.init(params), params)[0]  # the first step's update
  np.testing.assert_allclose(got["w"], tx.update(grads, tx.init(params), params)[0]["w"], rtol=1e-6)


@pytest.mark.integration
def test_replica_axis_sharded_over_devices_equals_unsharded():
  config = lambda shards: config_of("demo", **{"optim.lr": 0.01, "replicas.seeds": (3, 4),
                                             "replicas.shards": shards, "replicas.mode": "vmap"})
  losses1, state1, _ = _steps(config(1), 1, 2)
  losses8, state8, run8 = _steps(config(2), 8, 2)
  assert dict(run8.mesh.shape) == {sharding.REPLICA: 2, "data": 4}
  np.testing.assert_allclose(losses8, losses1, rtol=1e-6)
  for k in range(2):
    _assert_replica_equals(state8, k, state_lib.replica(state1, k), atol=1e-5)


@pytest.mark.integration
def test_replica_run_resumes_exactly_reports_and_evaluates(tmp_path):
  # (on one device, with one compilation cache: the sharded step is checked above)
  mesh = sharding.make_mesh(jax.devices()[:1])
  fields = {"replicas.seeds": (0, 1, 2), "replicas.tau": (1.0, 2.0, 2.0), "steps_per_dispatch": 2,
            "num_epochs": 1, "log_every_steps": 4, "compilation_cache_dir": str(tmp_path / "cache")}
  config = lambda **kw: config_of("demo", **{**fields, **kw})
  full = loop.train_and_evaluate(config(), str(tmp_path / "full"), mesh=mesh)
  resume.request_stop()  # stopped after the first dispatch, then resumed
  assert loop.train_and_evaluate(config(), str(tmp_path / "stop"), mesh=mesh) == {"stopped_at_step": 2}
  stopped = evaluate_checkpoint.evaluate_checkpoint(config(), str(tmp_path / "stop" / "checkpoints" / "2"),
                                         str(tmp_path / "eval_stop"), mesh)
  assert (stopped["epoch"], stopped["epoch_steps"]) == (0, 2)  # no epoch done, 2 steps into one
  resumed = loop.train_and_evaluate(config(), str(tmp_path / "stop"), mesh=mesh)
  template = run_lib.setup(config(), mesh).state
  states = []
  for name in ("full", "stop"):
    ckpt = checkpoint.Checkpointer(str(tmp_path / name / "checkpoints"))
    states.append(jax.device_get(ckpt.restore(ckpt.latest_step(), checkpoint.abstract(template))[0]))
    ckpt.close()
  for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    assert a.shape[:1] == (3,) or a.shape == ()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert resumed["replicas"] == full["replicas"] and resumed["history"] == full["history"]

  report = json.loads((tmp_path / "full" / "report.json").read_text())
  assert [(r["seed"], r["tau"]) for r in report["replicas"]] == [(0, 1.0), (1, 2.0), (2, 2.0)]
  assert report["final"] == report["replicas"][0]["final"]  # the first replica's report
  top1 = [r["final"]["top1"] for r in report["replicas"]]
  assert report["replica_mean"]["top1"] == pytest.approx(np.mean(top1))
  assert report["replica_std"]["top1"] == pytest.approx(np.std(top1, ddof=1))
  for key in ("many", "medium", "few", "rarest3", "ece"):
    assert key in report["replica_mean"] and key in report["replica_std"]
  assert len(report["replica_mean"]["per_class"]) == 10
  assert len(report["history"][-1]["replicas"]) == 3
  for name in replica_reports.PLOTS:  # a tau sweep: all three plots, not blank
    img = np.asarray(Image.open(tmp_path / "full" / name).convert("L"), np.float64)
    assert img.std() > 10, name
  lines = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
  assert any("loss_replica2" in l for l in lines if l["kind"] == "train")

  evaluated = evaluate_checkpoint.evaluate_checkpoint(config(), str(tmp_path / "full"), str(tmp_path / "eval"), mesh)
  assert [r["final"]["top1"] for r in evaluated["replicas"]] == top1
  for name in replica_reports.PLOTS:  # --mode=eval draws the replica plots too
    assert np.asarray(Image.open(tmp_path / "eval" / name).convert("L"), np.float64).std() > 10, name
  with pytest.raises(checkpoint.CheckpointError, match="replicas.seeds"):
    evaluate_checkpoint.evaluate_checkpoint(config_of("demo"), str(tmp_path / "full"), mesh=mesh)
  with pytest.raises(checkpoint.CheckpointError, match="replicas.seeds"):  # refused, not set aside
    loop.train_and_evaluate(config(**{"replicas.seeds": (0, 1, 5)}), str(tmp_path / "full"), mesh=mesh)
  assert not list((tmp_path / "full" / "checkpoints").glob("corrupt-*"))


