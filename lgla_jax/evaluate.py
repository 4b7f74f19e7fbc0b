"""Evaluate a saved checkpoint (the official ``test.py -r`` equivalent)."""

from __future__ import annotations

import os

import jax

from lgla_jax import checkpoint, metrics, reporting, resume, sharding, train
from lgla_jax import workdir as workdir_lib


def evaluate_checkpoint(config, path: str, workdir: str | None = None) -> dict:
  """Restore the checkpoint at ``path`` and evaluate it on the whole test set.

  The checkpoint's data set and network must be those of ``config`` (checked against the
  config saved with it). The report is written to ``workdir/eval_report.json`` (default:
  next to the checkpoints).
  """
  directory, step = checkpoint.resolve(path)
  run = train.setup(config)
  mesh, splits, state, steps = run.mesh, run.splits, run.state, run.steps
  ckpt = checkpoint.Checkpointer(directory)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  try:
    state, meta = ckpt.restore(step, checkpoint.abstract(state, sharding.replicated(mesh)))
  finally:
    ckpt.close()
  if "config" in meta:
    differ = workdir_lib.config_changes(meta["config"], resume.config_json(config),
                                        only=workdir_lib.MUST_MATCH_FOR_EVAL)
    if differ:
      raise checkpoint.CheckpointError(
          f"checkpoint {directory}/{step} was trained on other data or another network than "
          f"this config describes ({'; '.join(differ)}): evaluate it with the config it was "
          f"trained with")
  report = train.run_evaluation(steps, state, splits.test, splits.class_counts, config, mesh)
  report["epoch"] = meta.get("epoch")
  report["checkpoint"] = os.path.join(directory, str(step))
  out_dir = workdir or os.path.dirname(directory)
  if jax.process_index() == 0:
    reporting.write(report, splits.class_counts, out_dir, "eval_report.json")
    print(metrics.format_table(report))
  return report
