"""Does a checkpoint save stall training? Step times around saves, asynchronous (as the
training loop saves) and synchronous (save, then wait for the write), on synthetic data:

  python tools/save_stall.py --config=configs/cifar100_ir100.py --config.batch_size=64

Prints one JSON object: the median step time away from saves, the time the ``save`` call
itself blocks the loop (digests of the state, orbax's copy to host, scheduling the write),
the median of the steps taken while the write runs in the background, and the time a
synchronous save (``save`` + ``wait``) would take instead. Times are wall seconds of the
loop as ``train.loop`` runs it (the metrics of a dispatch fetched during the next one).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

import jax
from absl import app, flags, logging
from lgla_jax import benchmark  # (it defines --config)
from lgla_jax.train import checkpoint, feed, resume, run as run_lib

_SAVES = flags.DEFINE_integer("saves", 3, "Saves of each kind (asynchronous, synchronous).")
_BETWEEN = flags.DEFINE_integer("between", 12, "Dispatches between two saves.")


def _state_bytes(state) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


def measure(config, saves: int, between: int, warmup: int) -> dict:
  """Step times around ``saves`` asynchronous then ``saves`` synchronous saves."""
  run = run_lib.setup(config, splits=benchmark.synthetic_splits(config, num_test=100))
  step_fn = run.steps.train_chunk if run.placement.steps_per_dispatch > 1 else run.steps.train
  n = (warmup + 2 * saves * between + between) * run.placement.steps_per_dispatch
  items = feed.dispatches(run, 0, n)
  state, metrics, step = run.state, None, 0
  plain, during, save_call, sync_save = [], [], [], []
  with tempfile.TemporaryDirectory() as folder:
    ckpt = checkpoint.Checkpointer(folder + "/checkpoints", keep=2)
    for i, (k, batch) in enumerate(items):
      t0 = time.perf_counter()
      state, new_metrics = step_fn(state, batch)
      if metrics is not None:
        jax.device_get(metrics)
      metrics, step = new_metrics, step + k
      t_step = time.perf_counter() - t0
      j = i - warmup
      if j < 0:
        continue
      kind, at = divmod(j, between)
      meta = resume.meta(config, 0, step, len(run.splits.train.labels), step)
      if at == 0 and kind < 2 * saves:  # a save after this step
        jax.block_until_ready(state)  # (as the loop has it: ``settle`` waited for the step)
        t0 = time.perf_counter()
        ckpt.save(step, state, meta)
        if kind >= saves:  # synchronous: the loop waits for the write
          ckpt.wait()
          sync_save.append(time.perf_counter() - t0)
        else:
          save_call.append(time.perf_counter() - t0)
      elif kind < saves and at <= 3:  # the steps while an asynchronous write runs
        during.append(t_step)
      elif at > 3:
        plain.append(t_step)
    ckpt.close()
  med = lambda xs: round(statistics.median(xs), 4) if xs else None
  return {"config": flags.FLAGS["config"].config_filename, "batch_size": config.batch_size,
          "state_mb": round(_state_bytes(state) / 2**20, 2), "devices": jax.device_count(),
          "step_s_median": med(plain), "async_save_call_s_median": med(save_call),
          "steps_during_async_write_s_median": med(during),
          "sync_save_s_median": med(sync_save), "saves": saves}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # (orbax's INFO lines)
  print(json.dumps(measure(flags.FLAGS.config, _SAVES.value, _BETWEEN.value, flags.FLAGS.warmup)))


if __name__ == "__main__":
  app.run(main)
