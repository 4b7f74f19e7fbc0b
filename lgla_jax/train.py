"""``train_and_evaluate(config, workdir)``: the training loop and its jitted steps."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lgla_jax import checkpoint, configlib, datasets, input_pipeline, losses, models
from lgla_jax import metrics as metrics_lib
from lgla_jax import optim, reporting, sharding, state as state_lib
from lgla_jax.steps import Steps, make_steps


def run_evaluation(steps: Steps, state, test: datasets.ArrayData, class_counts, config, mesh) -> dict:
  """Evaluate on every test image exactly once; returns the accuracy report."""
  totals = None
  it = input_pipeline.eval_iterator(test.images, test.labels, global_batch=config.eval_batch_size,
                                    image_size=config.dataset.image_size,
                                    recipe=config.augment.recipe,
                                    num_workers=config.num_workers)
  for batch in input_pipeline.prefetch_to_device(it, sharding.batch_sharding(mesh)):
    counts = steps.eval(state, batch)
    totals = counts if totals is None else jax.tree.map(jnp.add, totals, counts)
  return metrics_lib.report_from_counts(jax.device_get(totals), class_counts)


class Logger:
  """Console progress, metrics.jsonl and TensorBoard events, from process 0 only."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      from tensorboardX import SummaryWriter  # writes event files without TensorFlow
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def print(self, text: str):
    if self.active:
      print(text, flush=True)

  def write(self, step: int, kind: str, values: dict):
    if not self.active:
      return
    self._jsonl.write(json.dumps({"step": int(step), "kind": kind, **values}) + "\n")
    self._jsonl.flush()
    for k, v in values.items():
      if isinstance(v, (int, float)) and v is not None:
        self._tb.add_scalar(f"{kind}/{k}", v, int(step))

  def close(self):
    if self.active:
      self._jsonl.close()
      self._tb.close()


# Set by SIGTERM (preemption) or by ``request_stop()``: the loop saves a checkpoint at the
# current step and returns; rerunning the same command resumes at that exact batch.
STOP = threading.Event()


def request_stop():
  STOP.set()


@contextlib.contextmanager
def _stop_on_sigterm():
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: STOP.set())
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _meta(config, epoch, step, num_train):
  return {"epoch": int(epoch), "step": int(step), "seed": int(config.seed),
          "num_train_images": int(num_train), "batch_size": int(config.batch_size),
          "drop_last_batch": bool(config.drop_last_batch)}


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything a run is made of, built once by ``setup``."""

  mesh: jax.sharding.Mesh
  splits: datasets.DataSplits
  model: models.Model
  tx: optax.GradientTransformation
  lr_table: np.ndarray  # learning rate of every epoch
  steps_per_epoch: int
  state: state_lib.TrainState  # freshly initialised (or pretrained), replicated on the mesh
  steps: Steps


def setup(config, mesh=None, splits=None) -> Run:
  """Validate, read the data (unless given), build model, loss, optimizer, state and steps."""
  mesh = mesh or sharding.make_mesh()
  configlib.validate(config, num_devices=mesh.size)
  splits = splits or datasets.load(config.dataset)
  dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
  model = models.build(config.model, splits.num_classes, dtype)
  loss_fn = losses.make(config.loss, splits.class_counts, config.model.num_experts, model.logit_scale)
  spe = input_pipeline.steps_per_epoch(len(splits.train.labels), config.batch_size,
                                       config.drop_last_batch)
  tx, lr_table = optim.make_optimizer(config.optim, config.num_epochs, spe)
  size = config.dataset.image_size
  image_shape = (size, size, 3)
  in_memory = isinstance(splits.train.images, np.ndarray)
  if in_memory and splits.train.images.shape[1:] != image_shape:
    raise configlib.ConfigError(f"config.dataset.image_size={size} but the images are "
                                f"{splits.train.images.shape[1:]}")
  state = state_lib.create(model, tx, jax.random.PRNGKey(config.seed), image_shape,
                           sharding.replicated(mesh))
  if config.model.pretrained:
    params, model_state = model.load_pretrained(
        *jax.device_get((state.params, state.model_state)), config.model.pretrained)
    params, model_state = jax.device_put((params, model_state), sharding.replicated(mesh))
    state = state.replace(params=params, model_state=model_state)
  steps = make_steps(model, tx, loss_fn, mean=config.dataset.mean, std=config.dataset.std,
                     steps_per_epoch=spe, mesh=mesh,
                     xla_cpu_fast_elementwise=config.xla_cpu_fast_elementwise)
  return Run(mesh, splits, model, tx, lr_table, spe, state, steps)


def _restore_if_any(ckpt, state, config, mesh, num_train, log):
  """Resume from the latest checkpoint of the workdir, refusing one made for other data."""
  latest = ckpt.latest_step()
  if latest is None:
    return state
  state, meta = ckpt.restore(latest, checkpoint.abstract(state, sharding.replicated(mesh)))
  expected = _meta(config, 0, latest, num_train)
  meta.setdefault("drop_last_batch", True)  # checkpoints from before the option dropped it
  for key in ("seed", "num_train_images", "batch_size", "drop_last_batch"):
    if meta.get(key) != expected[key]:
      raise checkpoint.CheckpointError(
          f"checkpoint {ckpt.directory}/{latest} was made with {key}={meta.get(key)}, this "
          f"run has {expected[key]}: use a new workdir")
  log.print(f"resuming from {ckpt.directory}/{latest} (epoch {meta['epoch']}, step "
            f"{int(jax.device_get(state.step))})")
  return state


def _earlier_evaluations(workdir: str, upto_step: int) -> list[dict]:
  """The evaluation history of the runs this one resumes, from their metrics.jsonl (the
  last entry per step, none after the checkpoint resumed from)."""
  by_step = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if upto_step and os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
          continue
        if entry.get("kind") == "eval" and entry.get("step", upto_step + 1) <= upto_step:
          by_step[entry["step"]] = {k: entry[k] for k in ("epoch", "top1", "many", "medium",
                                                           "few", "rarest3") if k in entry}
  return [by_step[k] for k in sorted(by_step)]


class _Progress:
  """Training-loss window, images/s and ETA for the console and the metrics log."""

  def __init__(self, config, total_steps, lr_table, log):
    self.config, self.total_steps, self.lr_table, self.log = config, total_steps, lr_table, log
    self.window, self.t0, self.images = [], time.time(), 0

  def add(self, fetched_metrics):
    self.window.append(fetched_metrics)
    self.images += self.config.batch_size

  def maybe_report(self, step, epoch):
    if step % self.config.log_every_steps or not self.window:
      return
    loss = float(np.mean([w["loss"] for w in self.window]))
    expert = np.mean([w["expert_losses"] for w in self.window], axis=0)
    rate = self.images / (time.time() - self.t0)
    eta = (self.total_steps - step) * self.config.batch_size / max(rate, 1e-9)
    lr = float(self.lr_table[epoch - 1])
    self.log.print(f"epoch {epoch}/{self.config.num_epochs} step {step}/{self.total_steps} "
                   f"loss {loss:.4f} lr {lr:.5f} {rate:.1f} img/s ETA {eta / 60:.1f} min")
    self.log.write(step, "train", {"loss": loss, "lr": lr, "images_per_s": rate,
                                   **{f"loss_expert{i}": float(v) for i, v in enumerate(expert)}})
    self.window, self.t0, self.images = [], time.time(), 0


def train_and_evaluate(config, workdir: str) -> dict:
  """Train (resuming from the latest checkpoint in ``workdir``), evaluate, write the report.

  Returns the report, or ``{"stopped_at_step": N}`` when stopped early (SIGTERM or
  ``request_stop``) after saving a checkpoint at step N.
  """
  t_start = time.time()
  run = setup(config)
  mesh, splits, lr_table, spe, state, steps = (run.mesh, run.splits, run.lr_table,
                                               run.steps_per_epoch, run.state, run.steps)
  log = Logger(workdir)
  num_train = len(splits.train.labels)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  try:
    state = _restore_if_any(ckpt, state, config, mesh, num_train, log)
    step = start_step = int(jax.device_get(state.step))
    total_steps = spe * config.num_epochs
    log.print(f"{config.dataset.name}: {num_train} training images (counts "
              f"{splits.class_counts.tolist()}), {len(splits.test.labels)} test images; {spe} "
              f"steps/epoch x {config.num_epochs} epochs on {mesh.size} device(s); model "
              f"{config.model.name}, loss {losses.describe(config.loss)}")
    it = input_pipeline.train_iterator(
        splits.train.images, splits.train.labels, seed=config.seed, global_batch=config.batch_size,
        num_epochs=config.num_epochs, start_step=start_step, augment_config=config.augment,
        num_workers=config.num_workers, image_size=config.dataset.image_size,
        fill=tuple(round(255 * m) for m in config.dataset.mean),
        drop_last=config.drop_last_batch)
    progress = _Progress(config, total_steps, lr_table, log)
    history = _earlier_evaluations(workdir, start_step)
    pending, report, t_train = None, None, 0.0
    t_last = time.time()
    with _stop_on_sigterm():
      for batch in input_pipeline.prefetch_to_device(it, sharding.batch_sharding(mesh)):
        state, metrics = steps.train(state, batch)
        if pending is not None:  # fetch step n-1's metrics while step n runs
          progress.add(jax.device_get(pending))
        pending = metrics
        step += 1
        now = time.time()
        if step > start_step + 1:  # steady state: the first step after a (re)start compiles
          t_train += now - t_last
        t_last = now
        epoch = (step - 1) // spe + 1
        progress.maybe_report(step, epoch)
        if step % spe == 0:  # end of an epoch
          last = epoch == config.num_epochs
          if (config.eval_every_epochs and epoch % config.eval_every_epochs == 0) or last:
            report = run_evaluation(steps, state, splits.test, splits.class_counts, config, mesh)
            report["epoch"] = epoch
            history.append({k: report[k] for k in ("epoch", "top1", "many", "medium", "few", "rarest3")})
            log.write(step, "eval", history[-1])
            if not last:
              log.print(f"epoch {epoch} test accuracy:\n{metrics_lib.format_table(report)}")
          if (config.checkpoint_every_epochs and epoch % config.checkpoint_every_epochs == 0) or last:
            ckpt.save(step, state, _meta(config, epoch, step, num_train))
          t_last = time.time()  # evaluation and saving are not training time
        if STOP.is_set() and step < total_steps:
          ckpt.save(step, state, _meta(config, step // spe, step, num_train))
          log.print(f"stopped at step {step}; saved a checkpoint: rerun the same command to resume")
          STOP.clear()
          return {"stopped_at_step": step}
  finally:
    ckpt.close()
    log.close()
  if report is None:  # resumed after the last epoch had already finished
    report = run_evaluation(steps, state, splits.test, splits.class_counts, config, mesh)
    report["epoch"] = config.num_epochs
  timed = step - start_step - 1
  result = {"final": report, "history": history,
            "train_images_per_s": timed * config.batch_size / t_train if timed > 0 and t_train > 0 else None,
            "wall_time_s": time.time() - t_start, "class_counts": splits.class_counts.tolist(),
            "config": json.loads(config.to_json_best_effort())}
  if config.report_best and history:
    result["best_epoch_selected_on_test_set"] = max(history, key=lambda h: h["top1"])
  if jax.process_index() == 0:
    reporting.write(result, splits.class_counts, workdir, "report.json", evaluation=report)
    print(f"final (epoch {report['epoch']}) test accuracy:\n{metrics_lib.format_table(report)}",
          flush=True)
  return result
