"""What a run tells: console progress, metrics.jsonl (strict JSON lines) and TensorBoard
events, from process 0 only; and the guard that stops a diverging run."""

from __future__ import annotations

import json
import tempfile
import time

import jax
import numpy as np

from lgla_jax import losses, optim
from lgla_jax.report import writer
from lgla_jax.storage import paths
from lgla_jax.errors import TrainingDiverged  # noqa: F401 - raised here, named by callers


def run_summary(run, selects_on_val: bool) -> str:
  """The run's first console line: data, schedule, network, loss, placement, replicas
  (``run``: a ``train.run.Run``)."""
  config, splits, reps, placed = run.config, run.splits, run.replicas, run.placement
  lr = None
  if reps and reps.lrs:
    lr = "per replica" if reps.is_lr_sweep else reps.lrs[0]
  val_note = (f", {len(splits.val.labels)} validation images (select the epoch)"
              if selects_on_val else "")
  return (f"{config.dataset.name}: {len(splits.train.labels)} training images (counts "
          f"{splits.class_counts.tolist()}), {len(splits.test.labels)} test images{val_note}; "
          f"{run.steps_per_epoch} steps/epoch x {config.num_epochs} epochs on {run.mesh.size} "
          f"device(s), {optim.describe(config.optim, lr)}; model {config.model.name}, loss "
          f"{losses.describe(config.loss)}{' (tau per replica)' if reps and reps.is_tau_sweep else ''}"
          f"; data on {'device' if placed.data_on_device else 'host'}, augmentation on "
          f"{'device' if placed.augment_on_device else 'host'}, {placed.steps_per_dispatch} "
          f"step(s) per dispatch" +
          (f"; {reps.size} replicas ({'; '.join(reps.label(k) for k in range(reps.size))}) "
           f"on {reps.shards} device group(s)" if reps else ""))


def check_finite(metrics: dict, step: int, epoch: int, last_checkpoint: str | None,
                 replica_label=None) -> None:
  """Raise ``TrainingDiverged`` naming step and epoch if the step's loss or gradient norm is
  not finite (called on every step's metrics before anything is saved). In a replica run
  the values are per replica, and ``replica_label(k)`` names the diverged ones."""
  bad = [k for k in ("loss", "grad_norm") if k in metrics and not np.all(np.isfinite(metrics[k]))]
  if bad:
    values = ", ".join(f"{k} {np.asarray(metrics[k]).tolist()}" for k in bad)
    which = ""
    if replica_label is not None:
      broken = np.flatnonzero(~np.all([np.isfinite(metrics[k]) for k in bad], axis=0))
      which = f" in replica(s) {', '.join(replica_label(int(k)) for k in broken)}"
    if last_checkpoint:
      kept = (f"the last good checkpoint, {last_checkpoint}, is kept. Lower --config.optim.lr "
              f"(or check the data) and rerun in a new workdir, or rerun here to resume from "
              f"that checkpoint")
    else:
      kept = ("no checkpoint had been saved yet. Lower --config.optim.lr (or check the data) "
              "and rerun: here or in a new workdir, it starts from the beginning")
    raise TrainingDiverged(f"training diverged at step {step} (epoch {epoch}){which}: {values}. "
                           f"Nothing was saved after it; {kept}")


class Logger:
  """Console progress, metrics.jsonl and TensorBoard events, from process 0 only.

  In a bucket workdir (which takes no appends) both are written locally, in a temporary
  folder outside the current directory, and uploaded whole at most every
  ``UPLOAD_EVERY_S`` seconds and on ``close`` (GCS allows about one write per second to
  an object)."""

  UPLOAD_EVERY_S = 10.0

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    self._tb = None
    if not self.active:
      return
    self._workdir = paths.path(workdir)
    self._remote = paths.is_remote(workdir)
    local = self._workdir
    if self._remote:
      local = paths.path(tempfile.mkdtemp(prefix="lgla-jax-log-"))
      remote_log = self._workdir / "metrics.jsonl"
      if remote_log.exists():  # a resumed run's history, appended to
        (local / "metrics.jsonl").write_bytes(remote_log.read_bytes())
    else:
      local.mkdir(parents=True, exist_ok=True)
    self._local = local
    self._jsonl = (local / "metrics.jsonl").open("a")
    from tensorboardX import SummaryWriter  # writes event files without TensorFlow
    self._tb = SummaryWriter(str(local / "tensorboard"))
    self._uploaded = time.time()

  def print(self, text: str):
    """Print a console line (process 0 only)."""
    if self.active:
      print(text, flush=True)

  def write(self, step: int, kind: str, values: dict):
    """Append one metrics.jsonl line and the numeric values to TensorBoard (process 0 only)."""
    if not self.active:
      return
    line = writer.strict({"step": int(step), "kind": kind, **values})
    self._jsonl.write(json.dumps(line, allow_nan=False) + "\n")
    self._jsonl.flush()
    for k, v in values.items():
      if isinstance(v, (int, float)) and v is not None:
        self._tb.add_scalar(f"{kind}/{k}", v, int(step))
    if self._remote and time.time() - self._uploaded > self.UPLOAD_EVERY_S:
      self.upload()

  def upload(self):
    """Copy metrics.jsonl and the event files to a bucket workdir (nothing for a local one)."""
    if not (self.active and self._remote):
      return
    self._tb.flush()
    paths.write_atomic(self._workdir / "metrics.jsonl", (self._local / "metrics.jsonl").read_bytes())
    for events in (self._local / "tensorboard").glob("events.*"):
      paths.write_atomic(self._workdir / "tensorboard" / events.name, events.read_bytes())
    self._uploaded = time.time()

  def close(self):
    """Close metrics.jsonl and the TensorBoard writer (uploading them to a bucket workdir)."""
    if self.active:
      self._jsonl.close()
      self._tb.close()
      self.upload()
      if self._remote:
        self._local.rmtree(missing_ok=True)


class Progress:
  """Training-loss window, images/s and ETA for the console and the metrics log."""

  def __init__(self, config, total_steps, lr_table, log, replicas: int = 1):
    self.config, self.total_steps, self.lr_table, self.log = config, total_steps, lr_table, log
    self.step_images = config.batch_size * replicas  # a replica run trains R batches a step
    self.replicas = replicas
    self.window, self.t0, self.images = [], time.time(), 0

  def add(self, fetched_metrics):
    """Count one step's images and keep its fetched metrics for the next report."""
    self.window.append(fetched_metrics)
    self.images += self.step_images

  def maybe_report(self, step, epoch, steps_done: int = 1):
    """Report when the last ``steps_done`` steps crossed a multiple of log_every_steps."""
    every = self.config.log_every_steps
    if step // every == (step - steps_done) // every or not self.window:
      return
    # (a replica run: the mean over its replicas, and each replica's loss in the log)
    losses = np.mean([np.reshape(w["loss"], -1) for w in self.window], axis=0)
    loss = float(losses.mean())
    experts = np.stack([np.asarray(w["expert_losses"]) for w in self.window])  # [W, (R,) E]
    expert = experts.mean(axis=tuple(range(experts.ndim - 1)))  # (E may be 0: one head)
    rate = self.images / (time.time() - self.t0)
    eta = (self.total_steps - step) * self.step_images / max(rate, 1e-9)
    lr = float(self.lr_table[epoch - 1])
    self.log.print(f"epoch {epoch}/{self.config.num_epochs} step {step}/{self.total_steps} "
                   f"loss {loss:.4f}{' (replica mean)' if self.replicas > 1 else ''} lr "
                   f"{lr:.5f} {rate:.1f} img/s ETA {eta / 60:.1f} min")
    per_replica = {f"loss_replica{k}": float(v) for k, v in enumerate(losses)} if self.replicas > 1 else {}
    self.log.write(step, "train", {"loss": loss, "lr": lr, "images_per_s": rate, **per_replica,
                                   **{f"loss_expert{i}": float(v) for i, v in enumerate(expert)}})
    self.window, self.t0, self.images = [], time.time(), 0


class Stopwatch:
  """Where a run's wall time goes (report key ``wall_time_parts_s``, seconds): ``setup``
  (data, model initialisation, restore), ``first_dispatch`` (the training step's compile
  and the first batch), ``checkpoint`` (the blocking part of the saves), ``evaluation``
  (including any wait for its compile) and ``train``: the rest."""

  def __init__(self, t_start: float):
    self.t_start, self.t_ready = t_start, time.time()
    self.first_dispatch = None
    self.sums = {"checkpoint": 0.0, "evaluation": 0.0}
    self._since = self.t_ready

  def dispatched(self):
    """A training dispatch returned (the first one has compiled the step)."""
    if self.first_dispatch is None:
      self.first_dispatch = time.time() - self.t_ready

  def start(self):
    """Time what follows, up to the next ``stop``."""
    self._since = time.time()

  def stop(self, part: str):
    """Add the time since ``start`` (or the last ``stop``) to ``part``."""
    now = time.time()
    self.sums[part] += now - self._since
    self._since = now

  def parts(self) -> dict:
    """The parts so far; they add up to the wall time since the run started."""
    out = {"setup": self.t_ready - self.t_start, "first_dispatch": self.first_dispatch or 0.0,
           **self.sums}
    out["train"] = time.time() - self.t_start - sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}
