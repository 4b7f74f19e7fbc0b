"""Replica runs: R seeds (and taus) in one vmapped step equal R single runs."""

import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from lgla_jax import errors
from lgla_jax import train
from lgla_jax.config import replicas
from lgla_jax.config import validate as validate_lib
from lgla_jax.report import replicas as replica_reports
from lgla_jax.train import checkpoint
from lgla_jax.train import evaluate_checkpoint
from lgla_jax.train import feed
from lgla_jax.train import replicas as train_replicas
from lgla_jax.train import sharding
from lgla_jax.train import state as state_lib
from lgla_jax.train import steps as steps_lib
from test_config import _parse
from test_train import _config

ROOT = pathlib.Path(__file__).parents[1]


def _steps(config, devices, n):
  """``n`` training steps through the loop's own batches and dispatches; per-step losses
  (stacked per replica) and the final state on the host."""
  run = train.setup(config, sharding.make_mesh(jax.devices()[:devices]))
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
  losses, state, run = _steps(_config("demo", **common, **{
      "replicas.seeds": (0, 1), "replicas.tau": (2.0, 3.0), "replicas.lr": (0.002, 0.001)}), 1, 4)
  assert losses.shape == (4, 2) and int(state.step) == 4
  assert run.config.replicas.mode == placement["replicas.mode"]
  single_fields = {k: v for k, v in common.items() if not k.startswith("replicas.")}
  for k, (seed, tau, lr) in enumerate([(0, 2.0, 0.002), (1, 3.0, 0.001)]):
    key = (tuple(sorted(single_fields.items())), seed, tau, lr)  # (shared by the chunk forms)
    if key not in _SINGLE_RUNS:
      _SINGLE_RUNS[key] = _steps(_config("demo", **{**single_fields, "optim.lr": lr},
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
  config = _config("demo", **{"optim.lr": 0.01, "replicas.seeds": (0, 1),
                              "replicas.lr": (0.002, 0.002)})
  run = train.setup(config, sharding.make_mesh(jax.devices()[:1]))
  config.optim.lr = 0.002
  tx, lr_table = optim.make_optimizer(config.optim, config.num_epochs, run.steps_per_epoch)
  np.testing.assert_allclose(run.lr_table, lr_table)
  params = {"w": np.linspace(-1.0, 1.0, 6, dtype=np.float32)}
  grads = {"w": np.linspace(0.5, -0.5, 6, dtype=np.float32)}
  got = run.tx.update(grads, run.tx.init(params), params)[0]  # the first step's update
  np.testing.assert_allclose(got["w"], tx.update(grads, tx.init(params), params)[0]["w"], rtol=1e-6)


@pytest.mark.integration
def test_replica_axis_sharded_over_devices_equals_unsharded():
  config = lambda shards: _config("demo", **{"optim.lr": 0.01, "replicas.seeds": (3, 4),
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
  config = lambda **kw: _config("demo", **{**fields, **kw})
  full = train.train_and_evaluate(config(), str(tmp_path / "full"), mesh=mesh)
  train.request_stop()  # stopped after the first dispatch, then resumed
  assert train.train_and_evaluate(config(), str(tmp_path / "stop"), mesh=mesh) == {"stopped_at_step": 2}
  stopped = evaluate_checkpoint.evaluate_checkpoint(config(), str(tmp_path / "stop" / "checkpoints" / "2"),
                                         str(tmp_path / "eval_stop"), mesh)
  assert (stopped["epoch"], stopped["epoch_steps"]) == (0, 2)  # no epoch done, 2 steps into one
  resumed = train.train_and_evaluate(config(), str(tmp_path / "stop"), mesh=mesh)
  template = train.setup(config(), mesh).state
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
    evaluate_checkpoint.evaluate_checkpoint(_config("demo"), str(tmp_path / "full"), mesh=mesh)
  with pytest.raises(checkpoint.CheckpointError, match="replicas.seeds"):  # refused, not set aside
    train.train_and_evaluate(config(**{"replicas.seeds": (0, 1, 5)}), str(tmp_path / "full"), mesh=mesh)
  assert not list((tmp_path / "full" / "checkpoints").glob("corrupt-*"))


def _demo(**fields):
  c = _parse([f"--config={ROOT / 'configs/demo.py'}"])
  for key, value in fields.items():
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
  return c


@pytest.mark.parametrize("fields, message", [
    ({"replicas.tau": (2.0, 3.0)}, "replicas.seeds is empty"),
    ({"replicas.seeds": (0, 1), "replicas.tau": (2.0,)}, "one value per seed"),
    ({"replicas.seeds": (0, 1), "replicas.tau": (2.0, -1.0)}, "must be >= 0"),
    ({"replicas.seeds": (0, -1)}, "non-negative integers"),
    ({"replicas.seeds": (0, 0)}, "more than once"),
    ({"replicas.seeds": (0, 1), "replicas.tau": (1.0, 2.0), "loss.name": "ce"}, "does not read tau"),
    ({"replicas.seeds": (0, 1, 2), "replicas.shards": 2}, "divide the 3 replicas"),
    ({"replicas.seeds": (0, 1, 2), "replicas.shards": 3}, "divide the 8 devices"),
    ({"replicas.shards": 2}, "set replicas.seeds first"),
    ({"replicas.seeds": (0, 1), "replicas.mode": "pmap"}, "not one of"),
    ({"replicas.seeds": (0, 1), "replicas.shards": 2, "replicas.mode": "unrolled"}, "use vmap"),
    ({"replicas.lr": (0.1, 0.2)}, "replicas.seeds is empty"),
    ({"replicas.seeds": (0, 1), "replicas.lr": (0.1,)}, "one value per seed"),
    ({"replicas.seeds": (0, 1), "replicas.lr": (0.1, 0.0)}, "must be > 0"),
    ({"replicas.seeds": (0, 0), "replicas.lr": (0.1, 0.1)}, "more than once"),
])
def test_bad_replica_fields_are_refused_naming_the_field(fields, message):
  with pytest.raises(errors.ConfigError, match=message) as e:
    validate_lib.validate(_demo(**fields), num_devices=8)
  assert str(e.value).startswith("config.replicas.")


def test_replica_fields_that_are_fine():
  validate_lib.validate(_demo(**{"replicas.seeds": (0, 0), "replicas.tau": (2.0, 3.0)}), num_devices=8)
  validate_lib.validate(_demo(**{"replicas.seeds": (0, 0), "replicas.lr": (0.1, 0.05)}), num_devices=8)
  # 2 groups of 4 devices: the batch need only divide by 4
  validate_lib.validate(_demo(**{"replicas.seeds": (0, 1), "replicas.shards": 2, "batch_size": 36,
                              "eval_batch_size": 4}), num_devices=8)
  with pytest.raises(errors.ConfigError, match="batch_size"):
    validate_lib.validate(_demo(batch_size=36), num_devices=8)


@pytest.mark.parametrize("token, seeds, taus", [("seeds5", (0, 1, 2, 3, 4), ()),
                                                ("tau_sweep", (0,) * 5, (2.0, 2.5, 3.0, 3.5, 4.0))])
def test_fashion_mnist_replica_variants(token, seeds, taus):
  c = _parse([f"--config={ROOT / 'configs/fmnist_lt_ir100.py'}:{token}"])
  validate_lib.validate(c, num_devices=1)
  assert (tuple(c.replicas.seeds), tuple(c.replicas.tau)) == (seeds, taus)
  base = _parse([f"--config={ROOT / 'configs/fmnist_lt_ir100.py'}"]).to_dict()
  assert {k for k in base if c.to_dict()[k] != base[k]} == {"replicas"}


def _fake_report(rng, num_classes=4, experts=2):
  acc = lambda: float(rng.uniform())
  report = {k: acc() for k in ("top1", "many", "medium", "few", "rarest3", "ece")}
  report["per_class"] = [acc() for _ in range(num_classes - 1)] + [None]
  report["experts"] = [{k: acc() for k in ("top1", "many", "medium", "few")} for _ in range(experts)]
  report["confusion"] = np.eye(num_classes).tolist()
  return report


def test_summary_mean_and_sample_std_of_every_metric(tmp_path):
  rng = np.random.default_rng(0)
  reports = [_fake_report(rng) for _ in range(4)]
  reps = replicas.Replicas(seeds=(0, 0, 1, 1), taus=(2.0, 3.0, 2.0, 3.0), lrs=(0.1, 0.1, 0.1, 0.2))
  out = replica_reports.summary(reports, reps)
  for key in ("top1", "many", "rarest3", "ece"):
    values = [r[key] for r in reports]
    assert out["replica_mean"][key] == pytest.approx(np.mean(values))
    assert out["replica_std"][key] == pytest.approx(np.std(values, ddof=1))
  assert out["replica_mean"]["per_class"][0] == pytest.approx(np.mean([r["per_class"][0] for r in reports]))
  assert out["replica_mean"]["per_class"][-1] is None  # a class without test images
  assert out["replica_std"]["experts"][1]["few"] == pytest.approx(
      np.std([r["experts"][1]["few"] for r in reports], ddof=1))
  assert "confusion" not in out["replica_mean"] and "confusion" not in out["replicas"][0]["final"]
  assert [(r["seed"], r["tau"], r["lr"]) for r in out["replicas"]] == list(zip(reps.seeds, reps.taus, reps.lrs))
  table = replica_reports.format_table(reports, reps)
  assert "seed 1, tau 3, lr 0.2" in table and "mean +- std over 4 replicas" in table
  paths = replica_reports.write_plots(reports, reps, [50, 20, 5, 1], str(tmp_path))
  assert [pathlib.Path(p).name for p in paths] == list(replica_reports.PLOTS)
  seeds_only = replicas.Replicas(seeds=(0, 1), taus=(2.0, 2.0))
  paths = replica_reports.write_plots(reports[:2], seeds_only, [50, 20, 5, 1], str(tmp_path / "seeds"))
  assert len(paths) == 2  # no tau sweep plot without a sweep


def test_replica_mesh_keeps_each_process_share_of_the_data_axis():
  devices = jax.devices()[:8]
  mesh = sharding.make_mesh(devices, replica_shards=2)
  assert mesh.axis_names == (sharding.REPLICA, "data") and sharding.data_size(mesh) == 4
  # devices 0-3 (one process of two) hold data columns 0-1 of both replica groups
  assert sorted(d.id for d in mesh.devices[:, :2].flat) == [d.id for d in devices[:4]]
  assert tuple(sharding.train_batch_sharding(mesh).spec) == (sharding.REPLICA, "data")
  assert tuple(sharding.train_batch_sharding(mesh, chunked=True).spec) == (None, sharding.REPLICA, "data")
  with pytest.raises(ValueError, match="replica groups"):
    sharding.make_mesh(devices[:3], replica_shards=2)
  batches = train_replicas.stacked([iter([{"index": np.arange(4), "step": 0}]),
                              iter([{"index": np.arange(4) + 10, "step": 0}])])
  one = next(batches)
  assert one["index"].shape == (2, 4) and "step" not in one


def test_a_diverged_replica_stops_the_run_naming_it():
  from lgla_jax.report import progress
  reps = replicas.Replicas(seeds=(0, 7), taus=(2.0, 3.0))
  finite = {"loss": np.array([1.0, 2.0]), "grad_norm": np.array([1.0, 1.0])}
  progress.check_finite(finite, 5, 1, None, reps.label)
  with pytest.raises(progress.TrainingDiverged, match=r"step 5 \(epoch 1\) in replica\(s\) seed 7, tau 3"):
    progress.check_finite({**finite, "loss": np.array([1.0, np.nan])}, 5, 1, None, reps.label)
