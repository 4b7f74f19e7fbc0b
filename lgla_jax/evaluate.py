"""Evaluate a saved checkpoint (the official ``test.py -r`` equivalent)."""

from __future__ import annotations

import os

import jax

from lgla_jax import checkpoint, metrics, replicas, reporting, resume, train
from lgla_jax import workdir as workdir_lib


def evaluate_checkpoint(config, path: str, workdir: str | None = None, mesh=None) -> dict:
  """Restore the checkpoint at ``path`` and evaluate it on the whole test set.

  The checkpoint's data set and network must be those of ``config`` (checked against the
  config saved with it); a replica run's checkpoint is evaluated for every replica
  (``replicas``, ``replica_mean``, ``replica_std`` next to the first replica's report). The report is written to ``workdir/eval_report.json`` (default:
  next to the checkpoints).
  """
  directory, step = checkpoint.resolve(path)
  run = train.setup(config, mesh)
  mesh, splits, state, steps = run.mesh, run.splits, run.state, run.steps
  ckpt = checkpoint.Checkpointer(directory)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  try:
    meta = ckpt.read_meta(step)  # compared first: a mismatched state cannot even be read
    if "config" in meta:
      differ = workdir_lib.config_changes(meta["config"], resume.config_json(config),
                                          only=workdir_lib.MUST_MATCH_FOR_EVAL)
      if differ:
        raise checkpoint.CheckpointError(
            f"checkpoint {directory}/{step} was trained on other data, another network or "
            f"other replicas than this config describes ({'; '.join(differ)}): evaluate it with the config it was "
            f"trained with")
    state, meta = ckpt.restore(step, checkpoint.abstract(state))
  finally:
    ckpt.close()
  reports = train.evaluate_replicas(steps, state, splits.test, splits.class_counts, config, mesh)
  for r in reports:
    r["epoch"] = meta.get("epoch")
  report = dict(reports[0], checkpoint=os.path.join(directory, str(step)))
  if run.replicas:  # the first replica's report, and every replica's with their mean and std
    report.update(replicas.summary(reports, run.replicas))
  out_dir = workdir or os.path.dirname(directory)
  if jax.process_index() == 0:
    reporting.write(report, splits.class_counts, out_dir, "eval_report.json")
    print(metrics.format_table(report))
    if run.replicas:
      print(replicas.format_table(reports, run.replicas))
  return report
