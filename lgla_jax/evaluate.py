"""Evaluate a saved checkpoint (the official ``test.py -r`` equivalent)."""

from __future__ import annotations

import os

import jax

from lgla_jax import checkpoint, metrics, reporting, sharding, train


def evaluate_checkpoint(config, path: str, workdir: str | None = None) -> dict:
  """Restore the checkpoint at ``path`` and evaluate it on the whole test set.

  The report is written to ``workdir/eval_report.json`` (default: next to the checkpoints).
  """
  directory, step = checkpoint.resolve(path)
  run = train.setup(config)
  mesh, splits, state, steps = run.mesh, run.splits, run.state, run.steps
  ckpt = checkpoint.Checkpointer(directory)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  state, meta = ckpt.restore(step, checkpoint.abstract(state, sharding.replicated(mesh)))
  ckpt.close()
  report = train.run_evaluation(steps, state, splits.test, splits.class_counts, config, mesh)
  report["epoch"] = meta.get("epoch")
  report["checkpoint"] = os.path.join(directory, str(step))
  out_dir = workdir or os.path.dirname(directory)
  if jax.process_index() == 0:
    reporting.write(report, splits.class_counts, out_dir, "eval_report.json")
    print(metrics.format_table(report))
  return report
