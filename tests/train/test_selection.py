"""Epoch selection on a validation split (the official ``model_best`` by val accuracy)."""


import pytest

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.config import validate as validate_lib
from lgla_jax.train import selection


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
  c = config_lib.base_config()
  c.dataset.select_on = "val"  # cifar100: its official validation loader is the test set
  with pytest.raises(errors.ConfigError, match="dataset.select_on.*no validation split"):
    validate_lib.validate(c)
  c.dataset.select_on = "best"
  with pytest.raises(errors.ConfigError, match="dataset.select_on"):
    validate_lib.validate(c)


