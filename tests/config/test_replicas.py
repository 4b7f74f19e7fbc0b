"""Replica runs: R seeds (and taus) in one vmapped step equal R single runs."""

import pathlib

import jax
import numpy as np
import pytest

from lgla_jax import errors
from lgla_jax.config import replicas
from lgla_jax.config import validate as validate_lib
from lgla_jax.report import replicas as replica_reports
from lgla_jax.train import replicas as train_replicas
from lgla_jax.train import sharding
from helpers import ROOT, parse_config


def _demo(**fields):
  c = parse_config([f"--config={ROOT / 'configs/demo.py'}"])
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
  c = parse_config([f"--config={ROOT / 'configs/fmnist_lt_ir100.py'}:{token}"])
  validate_lib.validate(c, num_devices=1)
  assert (tuple(c.replicas.seeds), tuple(c.replicas.tau)) == (seeds, taus)
  base = parse_config([f"--config={ROOT / 'configs/fmnist_lt_ir100.py'}"]).to_dict()
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
