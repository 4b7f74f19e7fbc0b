"""Epoch selection on a validation split (the official ``model_best`` by val accuracy)."""

import json

import numpy as np
import pytest

from lgla_jax.train import loop
from lgla_jax.train import evaluate_checkpoint
from lgla_jax.train import selection
from helpers import config_of, make_tree


@pytest.mark.integration
def test_each_replica_reports_the_test_accuracy_of_its_own_validation_selected_epoch(tmp_path):
  """A Places quick run of 2 replicas (a single run is replica 0's case: the unit tests
  above), 3 epochs, validation every epoch."""
  root, splits = make_tree(tmp_path, "places_lt", num_test=20)
  config = config_of("places_lt_resnet152", **{
      "dataset.data_dir": str(root), "dataset.split_dir": str(splits), "model.arch": "resnet26",
      "dataset.image_size": 32, "num_epochs": 3, "keep_checkpoints": 3, "batch_size": 32,
      "model.bn_group_size": 8, "replicas.seeds": (0, 1)})
  assert config.dataset.select_on == "val" and config.eval_every_epochs == 1
  result = loop.train_and_evaluate(config, str(tmp_path / "wd"))
  vals = result["val_history"]
  assert [v["epoch"] for v in vals] == [1, 2, 3] and [len(v["replicas"]) for v in vals] == [2, 2, 2]
  tested = [h["epoch"] for h in result["history"]]
  improving, evaluated = set(), {}
  for k, entry in enumerate(result["replicas"]):
    series = [v["replicas"][k]["top1"] for v in vals]
    improving |= {vals[i]["epoch"] for i, t in enumerate(series) if all(t > u for u in series[:i])}
    chosen = entry[selection.REPORT_KEY]
    assert chosen["epoch"] == vals[int(np.argmax(series))]["epoch"]  # its own first maximum
    at = [h for h in result["history"] if h["epoch"] == chosen["epoch"]][-1]
    assert chosen["test"] == at["replicas"][k]  # that epoch's test evaluation, this replica's
    # ... which is that epoch's checkpoint, evaluated on its own
    if chosen["epoch"] not in evaluated:
      evaluated[chosen["epoch"]] = evaluate_checkpoint.evaluate_checkpoint(
          config, str(tmp_path / "wd" / "checkpoints" / str(chosen["epoch"] * 12)))
    report = evaluated[chosen["epoch"]]
    assert report["replicas"][k]["final"]["top1"] == pytest.approx(chosen["test"]["top1"])
  assert tested == sorted(improving | {3})  # tested where any replica improved, and last
  assert result[selection.REPORT_KEY] == result["replicas"][0][selection.REPORT_KEY]
  lines = [json.loads(x) for x in open(tmp_path / "wd" / "metrics.jsonl")]
  assert sum(x["kind"] == "val" for x in lines) == 3
  assert len(result["dataset_class_ids"]) == 365
  from lgla_jax.train import resume
  assert resume.earlier_evaluations(str(tmp_path / "wd"), 36, "val") == vals
