"""Epoch selection on a validation split (the official ``model_best`` by val accuracy)."""

import json

import numpy as np
import pytest

from lgla_jax import configlib, evaluate, selection, train


def _report(top1):
  return {"top1": top1, "many": top1, "medium": top1, "few": top1, "rarest3": top1}


def test_the_first_epoch_reaching_the_best_is_kept_per_replica():
  s = selection.ValSelection([], size=2)
  assert s.record(1, [_report(10.0), _report(30.0)], True)["improved"]
  assert s.record(2, [_report(20.0), _report(30.0)], True)["improved"]  # replica 0 improved
  assert not s.record(3, [_report(20.0), _report(30.0)], True)["improved"]  # ties do not count
  tests = [{"epoch": e, "top1": 0, "replicas": [_report(e + 0.5), _report(e + 0.25)]}
           for e in (1, 2)]
  assert s.selected(tests, 0) == {"epoch": 2, "val": _report(20.0), "test": _report(2.5)}
  assert s.selected(tests, 1) == {"epoch": 1, "val": _report(30.0), "test": _report(1.25)}
  resumed = selection.ValSelection(s.history, size=2)  # a resume continues from the history
  assert resumed.best == [20.0, 30.0]
  assert not resumed.record(4, [_report(19.0), _report(29.0)], True)["improved"]


def test_val_selection_needs_a_validation_split():
  c = configlib.base_config()
  c.dataset.select_on = "val"  # cifar100: its official validation loader is the test set
  with pytest.raises(configlib.ConfigError, match="dataset.select_on.*no validation split"):
    configlib.validate(c)
  c.dataset.select_on = "best"
  with pytest.raises(configlib.ConfigError, match="dataset.select_on"):
    configlib.validate(c)


@pytest.mark.integration
def test_a_run_reports_the_test_accuracy_of_its_validation_selected_epoch(tmp_path):
  from test_large_benchmarks import make_tree
  from test_train import _config
  root, splits = make_tree(tmp_path, "places_lt", num_test=20)
  config = _config("places_lt_resnet152", **{
      "dataset.data_dir": str(root), "dataset.split_dir": str(splits), "model.arch": "resnet26",
      "num_epochs": 3, "keep_checkpoints": 3, "batch_size": 32, "model.bn_group_size": 8,
      })
  assert config.dataset.select_on == "val" and config.eval_every_epochs == 1
  result = train.train_and_evaluate(config, str(tmp_path / "wd"))
  vals = result["val_history"]
  assert [v["epoch"] for v in vals] == [1, 2, 3]
  best = max(vals, key=lambda v: v["top1"])  # max returns the first of equals
  chosen = result[selection.REPORT_KEY]
  assert chosen["epoch"] == best["epoch"] and chosen["val"]["top1"] == best["top1"]
  improving = [v["epoch"] for i, v in enumerate(vals)
               if all(v["top1"] > w["top1"] for w in vals[:i])]
  assert [h["epoch"] for h in result["history"]] == sorted(set(improving) | {3})
  # The reported test accuracy is that epoch's checkpoint's, evaluated on its own.
  report = evaluate.evaluate_checkpoint(config, str(tmp_path / "wd" / "checkpoints" /
                                                    str(chosen["epoch"] * 12)))
  assert report["top1"] == pytest.approx(chosen["test"]["top1"])
  lines = [json.loads(x) for x in open(tmp_path / "wd" / "metrics.jsonl")]
  assert sum(x["kind"] == "val" for x in lines) == 3
  assert len(result["dataset_class_ids"]) == 365
  from lgla_jax import resume  # a resume reads the same selection back
  assert resume.earlier_evaluations(str(tmp_path / "wd"), 36, "val") == vals
