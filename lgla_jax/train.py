"""``train_and_evaluate(config, workdir)``: the training loop and its jitted steps."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lgla_jax import checkpoint, configlib, datasets, input_pipeline, losses, models
from lgla_jax import metrics as metrics_lib
from lgla_jax import optim, progress, reporting, resume, sharding, state as state_lib
from lgla_jax import workdir as workdir_lib
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


# The stop request lives in ``resume``; kept here for callers of ``train.request_stop``.
STOP, request_stop = resume.STOP, resume.request_stop


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
  if config.batch_size > len(splits.train.labels):
    raise configlib.ConfigError(f"config.batch_size: {config.batch_size} is larger than the "
                                f"{len(splits.train.labels)} training images; lower it")
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


def train_and_evaluate(config, workdir: str) -> dict:
  """Train (resuming from the latest checkpoint in ``workdir``), evaluate, write the report.

  Returns the report, or ``{"stopped_at_step": N}`` when stopped early (SIGTERM, SIGINT or
  ``request_stop``) after saving a checkpoint at step N. Raises
  ``progress.TrainingDiverged`` when the loss or gradient norm stops being finite (nothing
  is saved after the last finite step), ``checkpoint.CheckpointError`` when a checkpoint
  cannot be written, ``workdir.WorkdirError`` when another run holds the workdir.
  """
  if jax.process_index() != 0:  # one run of several processes: process 0 holds the lock
    return _train_and_evaluate(config, workdir)
  with workdir_lib.lock(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict:
  t_start = time.time()
  run = setup(config)
  mesh, splits, lr_table, spe, state, steps = (run.mesh, run.splits, run.lr_table,
                                               run.steps_per_epoch, run.state, run.steps)
  log = progress.Logger(workdir)
  num_train = len(splits.train.labels)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  finished = False
  try:
    state, changes = resume.restore_latest(ckpt, state, config, mesh, num_train, log)
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
    prog = progress.Progress(config, total_steps, lr_table, log)
    history = resume.earlier_evaluations(workdir, start_step)
    pending, report, t_train, final_save_error = None, None, 0.0, None
    t_last = time.time()
    epoch_of = lambda k: (k - 1) // spe + 1
    last_good = lambda: (f"{ckpt.directory}/{ckpt.latest_step()}"
                         if ckpt.latest_step() is not None else None)

    def settle():  # fetch and check the pending step: nothing is saved past a non-finite one
      nonlocal pending
      if pending is not None:
        metrics, at = pending
        fetched = jax.device_get(metrics)
        progress.check_finite(fetched, at, epoch_of(at), last_good())
        prog.add(fetched)
        pending = None

    with resume.stop_on_signals():
      for batch in input_pipeline.prefetch_to_device(it, sharding.batch_sharding(mesh)):
        state, metrics = steps.train(state, batch)
        settle()  # step n-1's metrics, fetched while step n runs
        ckpt.check()  # a failed asynchronous save stops the run now, not at its end
        step += 1
        pending = (metrics, step)
        now = time.time()
        if step > start_step + 1:  # steady state: the first step after a (re)start compiles
          t_train += now - t_last
        t_last = now
        epoch = epoch_of(step)
        prog.maybe_report(step, epoch)
        if step % spe == 0:  # end of an epoch
          settle()
          last = epoch == config.num_epochs
          if (config.checkpoint_every_epochs and epoch % config.checkpoint_every_epochs == 0) or last:
            # Saved before evaluating: a failing evaluation cannot lose the epoch's training.
            try:
              ckpt.save(step, state, resume.meta(config, epoch, step, num_train))
            except checkpoint.CheckpointError as e:
              if not last:
                raise
              final_save_error = e  # the final report is still written, then this is raised
          if (config.eval_every_epochs and epoch % config.eval_every_epochs == 0) or last:
            report = run_evaluation(steps, state, splits.test, splits.class_counts, config, mesh)
            report["epoch"] = epoch
            history.append({k: report[k] for k in ("epoch", "top1", "many", "medium", "few", "rarest3")})
            log.write(step, "eval", history[-1])
            if not last:
              log.print(f"epoch {epoch} test accuracy:\n{metrics_lib.format_table(report)}")
          t_last = time.time()  # evaluation and saving are not training time
        if resume.STOP.is_set() and step < total_steps:
          settle()
          ckpt.save(step, state, resume.meta(config, epoch_of(step), step, num_train))
          ckpt.wait()
          log.print(f"stopped at step {step} (epoch {epoch_of(step)}); saved a checkpoint: "
                    f"rerun the same command to resume there")
          resume.STOP.clear()
          finished = True
          return {"stopped_at_step": step}
      settle()
    if report is None:  # resumed after the last epoch had already finished
      report = run_evaluation(steps, state, splits.test, splits.class_counts, config, mesh)
      report["epoch"] = config.num_epochs
    timed = step - start_step - 1
    result = {"final": report, "history": history,
              "train_images_per_s": timed * config.batch_size / t_train if timed > 0 and t_train > 0 else None,
              "wall_time_s": time.time() - t_start, "class_counts": splits.class_counts.tolist(),
              "config": resume.config_json(config)}
    if changes:
      result["config_changes_on_resume"] = changes
    if config.report_best and history:
      result["best_epoch_selected_on_test_set"] = max(history, key=lambda h: h["top1"])
    if jax.process_index() == 0:  # written before the final save is known to have finished
      reporting.write(result, splits.class_counts, workdir, "report.json", evaluation=report)
      print(f"final (epoch {report['epoch']}) test accuracy:\n{metrics_lib.format_table(report)}",
            flush=True)
    if final_save_error is not None:
      raise final_save_error
    finished = True
    return result
  finally:
    try:
      ckpt.close()
    except checkpoint.CheckpointError:
      if finished:  # otherwise an earlier error is already on its way up
        raise
    finally:
      log.close()
