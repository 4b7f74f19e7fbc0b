"""Selecting the reported epoch on a validation split, as the official trainer does.

The official trainer keeps ``model_best`` by ``max val_accuracy``, and ``test.py`` reports
the test split for that checkpoint. On ImageNet-LT and Places-LT its validation loader
reads the data set's validation split (``*_LT_val.txt``); on CIFAR and iNaturalist it is
the test set. With ``config.dataset.select_on='val'`` a run evaluates the validation split
every ``eval_every_epochs`` epochs and the test split whenever the validation top-1 of some
replica improves (and at the end), so the test accuracy of the validation-selected epoch is
known without keeping a second checkpoint. An epoch improves only on a strictly higher
top-1 (the official ``>`` rule: the first epoch reaching the best is kept).
"""

from __future__ import annotations

import math

from lgla_jax.report import replicas as replicas_lib

REPORT_KEY = "best_epoch_selected_on_val_set"


class ValSelection:
  """The validation history of a run and each replica's best top-1 so far."""

  def __init__(self, earlier: list[dict], size: int):
    """``earlier``: the validation entries of the runs this one resumes; ``size``: replicas
    (1 for a single run)."""
    self.history = list(earlier)
    self.best = [-math.inf] * size
    for entry in self.history:
      for k, brief in enumerate(self._briefs(entry)):
        self.best[k] = max(self.best[k], brief["top1"])

  def record(self, epoch: int, reports: list[dict], replica_run: bool) -> dict:
    """Add one validation evaluation (a report per replica); returns its history entry,
    with ``improved`` true when some replica's top-1 rose above its best so far."""
    entry = {"epoch": epoch, **replicas_lib.brief(reports[0])}
    if replica_run:
      entry["replicas"] = [replicas_lib.brief(r) for r in reports]
    improved = False
    for k, r in enumerate(reports):
      if r["top1"] > self.best[k]:
        self.best[k], improved = r["top1"], True
    self.history.append(entry)
    return {**entry, "improved": improved}

  def selected(self, test_history: list[dict], k: int = 0) -> dict | None:
    """Replica ``k``'s selected epoch: ``{"epoch", "val", "test"}`` (the test metrics of that
    epoch's test evaluation), or None before any validation."""
    chosen = None
    for entry in self.history:
      brief = self._briefs(entry)[k]
      if chosen is None or brief["top1"] > chosen[1]["top1"]:
        chosen = (entry["epoch"], brief)
    if chosen is None:
      return None
    epoch, val = chosen
    tested = [e for e in test_history if e["epoch"] == epoch]
    test = self._briefs(tested[-1])[k] if tested else None  # None: no test evaluation kept
    return {"epoch": epoch, "val": val, "test": test}

  @staticmethod
  def _briefs(entry: dict) -> list[dict]:
    if "replicas" in entry:
      return entry["replicas"]
    return [{k: entry[k] for k in replicas_lib.METRICS}]
