"""``train_and_evaluate(config, workdir)``: the training loop.

A ``Trainer`` holds the loop's state (the train state, the step, the pending metrics, the
evaluation history, the checkpointer) and runs it in named pieces: restore the latest
checkpoint, dispatch the steps, end an epoch (checkpoint, then evaluate), stop on request,
write the final report. It knows no method by name: everything is in the ``run.Run``.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
from jax.experimental.compilation_cache import compilation_cache

from lgla_jax import errors
from lgla_jax.data import splits as splits_lib
from lgla_jax.report import data_summary, progress, replicas as replica_reports, writer
from lgla_jax.storage import paths
from lgla_jax.train import checkpoint, evaluation, feed, peers, resume, selection
from lgla_jax.train import workdir as workdir_lib
from lgla_jax.train.run import Run, join, setup


def train_and_evaluate(config, workdir: str, splits=None, mesh=None) -> dict:
  """Train (resuming from the latest checkpoint in ``workdir``), evaluate, write the report.
  ``splits``: in-memory data to use instead of reading ``config.dataset`` (a notebook's
  arrays, the benchmark's synthetic data); ``mesh``: the devices (default: all of them).

  Returns the report, or ``{"stopped_at_step": N}`` when stopped early (SIGTERM, SIGINT or
  ``resume.request_stop``) after saving a checkpoint at step N. Raises
  ``errors.TrainingDiverged`` when the loss or gradient norm stops being finite (nothing
  is saved after the last finite step), ``errors.CheckpointError`` when a checkpoint
  cannot be written, ``errors.WorkdirError`` when another run holds the workdir.
  """
  if jax.process_index() != 0:  # one run of several processes: process 0 holds the lock
    return _train_and_evaluate(config, workdir, splits, mesh)
  # A new workdir that a refused run (bad weights, config, data) leaves is removed.
  with workdir_lib.tidy_if_failed(workdir, lambda: _forget_cache_in(workdir)), \
       workdir_lib.lock(workdir):
    return _train_and_evaluate(config, workdir, splits, mesh)


def _forget_cache_in(workdir: str) -> None:
  """Stop using a compilation cache inside ``workdir`` (before the folder is removed)."""
  path = jax.config.jax_compilation_cache_dir
  if path and not paths.is_remote(workdir) and \
      os.path.abspath(path).startswith(os.path.abspath(workdir) + os.sep):
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", None)


def set_compilation_cache(config, workdir: str):
  """Compiled steps persist in WORKDIR/compilation_cache (or the configured folder, or else
  JAX's own ``JAX_COMPILATION_CACHE_DIR``: one cache shared by many workdirs), so a rerun or
  a resume does not compile again. The cache is process-wide: a later run in the same
  process (a notebook, the tests) moves it to its own folder."""
  path = config.compilation_cache_dir
  if path is None:
    # A bucket workdir keeps no cache (JAX's cache in a bucket is untested here).
    inside = None if paths.is_remote(workdir) else str(paths.path(workdir) / "compilation_cache")
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or inside
  path = str(paths.path(path).absolute()) if path else None
  if path != jax.config.jax_compilation_cache_dir:
    compilation_cache.reset_cache()  # (otherwise the first folder of the process stays in use)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _train_and_evaluate(config, workdir: str, splits=None, mesh=None) -> dict:
  t_start = time.time()
  set_compilation_cache(config, workdir)
  run = setup(config, mesh, splits, compile_ahead=True)
  try:
    return Trainer(run, workdir, t_start).train()
  finally:
    join(run.compiling)


class Trainer:
  """One run's training loop and everything it keeps between steps."""

  def __init__(self, run: Run, workdir: str, t_start: float):
    self.run, self.workdir = run, workdir
    self.config = run.config  # automatic choices made: the checkpoint records what runs
    self.reps = run.replicas
    self.size = run.replicas.size if run.replicas else 1  # images per step: this many batches
    self.num_train = len(run.splits.train.labels)
    self.total_steps = run.steps_per_epoch * run.config.num_epochs
    self.chunked = run.placement.steps_per_dispatch > 1
    self.state = run.state
    self.log = progress.Logger(workdir)
    self.ckpt = checkpoint.Checkpointer(paths.path(workdir) / "checkpoints",
                                        run.config.keep_checkpoints)
    # The training and evaluation steps compile in the background since the setup
    # (``run.compiling``): joined before their first use, their calls find them compiled.
    self.compiling = dict(run.compiling)
    self.times = progress.Stopwatch(t_start)
    self.t_start = t_start
    self.pending = None  # (metrics, last step, steps) of the dispatch not yet fetched
    self.report, self.reports = None, None  # the latest test evaluation (first replica, all)
    self.t_train, self.timed = 0.0, 0  # steady-state training time and its steps
    self.step_s = []  # each steady-state dispatch's time per step (for the median)
    self.final_save_error = None

  # ---- the run --------------------------------------------------------------------------

  def train(self) -> dict:
    """Restore, train to the last epoch (or a stop request), report. See ``train_and_evaluate``."""
    finished = False
    try:
      changes = self.restore()
      stopped = self.loop()
      if stopped is not None:
        finished = True
        return stopped
      result = self.final_report(changes)
      finished = True
      return result
    finally:
      try:
        self.ckpt.close()
      except errors.CheckpointError:
        if finished:  # otherwise an earlier error is already on its way up
          raise
      finally:
        self.log.close()

  def restore(self) -> list:
    """Resume from the workdir's latest checkpoint (if any); evaluate again an epoch whose
    evaluation was interrupted. Returns the config changes accepted on resume."""
    run, config = self.run, self.config
    self.state, changes = resume.restore_latest(self.ckpt, self.state, config, run.mesh,
                                                self.num_train, self.log)
    self.step = self.start_step = int(jax.device_get(self.state.step))
    self.select = (selection.ValSelection(resume.earlier_evaluations(
        self.workdir, self.start_step, "val"), self.size) if run.splits.val is not None else None)
    self.describe_data()
    self.log.print(progress.run_summary(run, self.select is not None))
    self.prog = progress.Progress(config, self.total_steps, run.lr_table, self.log,
                                  replicas=self.size)
    self.history = resume.earlier_evaluations(self.workdir, self.start_step)
    spe, start = run.steps_per_epoch, self.start_step
    logged = self.select.history if self.select is not None else self.history
    if (start and start % spe == 0 and self.evaluates(start // spe)
        and all(h["epoch"] != start // spe for h in logged)):
      self.log.print(f"epoch {start // spe}'s evaluation was interrupted: evaluating it again")
      self.times.start()
      self.evaluate_epoch(start // spe, start)
    return changes

  def describe_data(self):
    """The data summary first (classes, counts, imbalance, shot split); its plot and the class
    names (``classes.txt``, which predictions and reports read) into the workdir."""
    splits = self.run.splits
    summary = data_summary.summarize(splits.class_counts, splits_lib.class_names(splits),
                                     *evaluation.shot_thresholds(self.config))
    for line in data_summary.lines(summary):
      self.log.print(line)
    if jax.process_index() == 0:
      data_summary.write_class_names(summary["names"], self.workdir)
      data_summary.write_plot(summary, self.workdir)

  def loop(self) -> dict | None:
    """Dispatch every step from the restored one on; ``{"stopped_at_step": N}`` when a stop
    request ended it early, else None."""
    run, spe = self.run, self.run.steps_per_epoch
    t_last = time.time()
    stops = resume.StopRequests(self.start_step)
    peers.set_resume_hint(self.last_good)  # (for the line of a run whose peer died)
    with resume.stop_on_signals():
      for n, batch in feed.dispatches(run, self.start_step, self.total_steps):
        if "train" in self.compiling:
          self.compiling.pop("train").join()
        step_fn = run.steps.train_chunk if self.chunked else run.steps.train
        self.state, metrics = step_fn(self.state, batch)
        self.times.dispatched()
        self.settle()  # the previous dispatch's metrics, fetched while this one runs
        self.ckpt.check()  # a failed asynchronous save stops the run now, not at its end
        self.step += n
        self.pending = (metrics, self.step, n)
        now = time.time()
        if self.step > self.start_step + n:  # steady state: the first dispatch after a (re)start compiles
          self.t_train, self.timed = self.t_train + now - t_last, self.timed + n
          self.step_s.append((now - t_last) / n)
        t_last = now
        self.prog.maybe_report(self.step, self.epoch_of(self.step), n)
        stop = stops.reached(self.step)  # (on every process: before the epoch's collective save)
        if self.step % spe == 0:
          self.end_of_epoch(self.step // spe)
          t_last = time.time()  # evaluation and saving are not training time
        if (stop or stops.asked_here()) and self.step < self.total_steps:
          return self.stop()
      self.settle()
    resume.STOP.clear()  # (a stop asked during the last evaluations: the run is done anyway)
    return None

  # ---- the pieces -----------------------------------------------------------------------

  def epoch_of(self, step: int) -> int:
    """The (1-based) epoch that global step ``step`` belongs to."""
    return (step - 1) // self.run.steps_per_epoch + 1

  def evaluates(self, epoch: int) -> bool:
    """Whether ``epoch`` ends with an evaluation (every ``eval_every_epochs``, and the last)."""
    c = self.config
    return bool(c.eval_every_epochs and epoch % c.eval_every_epochs == 0 or epoch == c.num_epochs)

  def last_good(self) -> str | None:
    """The newest complete checkpoint, for messages."""
    latest = self.ckpt.latest_step()
    return f"{self.ckpt.directory}/{latest}" if latest is not None else None

  def settle(self):
    """Fetch and check the pending steps' metrics: nothing is saved past a non-finite one."""
    if self.pending is None:
      return
    metrics, end, n = self.pending
    fetched = jax.device_get(metrics)
    for i in range(n):
      one = jax.tree.map(lambda x: x[i], fetched) if self.chunked else fetched
      at = end - n + 1 + i
      progress.check_finite(one, at, self.epoch_of(at), self.last_good(), self.reps and self.reps.label)
      self.prog.add(one)
    self.pending = None

  def end_of_epoch(self, epoch: int):
    """Save the epoch's checkpoint where scheduled (before evaluating: a failing evaluation
    cannot lose the epoch's training), then evaluate where scheduled."""
    self.settle()
    c, last = self.config, epoch == self.config.num_epochs
    self.times.start()
    if (c.checkpoint_every_epochs and epoch % c.checkpoint_every_epochs == 0) or last:
      try:
        self.ckpt.save(self.step, self.state, resume.meta(c, epoch, self.step, self.num_train))
      except errors.CheckpointError as e:
        if not last:
          raise
        self.final_save_error = e  # the final report is still written, then this is raised
    self.times.stop("checkpoint")
    if self.evaluates(epoch):
      self.evaluate_epoch(epoch, self.step)

  def evaluate_on(self, split) -> list[dict]:
    """Every replica's report of ``split`` with the current state."""
    run = self.run
    return evaluation.evaluate_replicas(run.steps, self.state, split, run.splits.class_counts,
                                        self.config, run.mesh)

  def evaluate_epoch(self, epoch: int, step: int):
    """The epoch's evaluations: the validation split where the epoch is selected on it, the
    test split where the selection may land (always at the last epoch). Both are logged
    after both ran: a process killed in between leaves no half record, and its resume
    from this epoch's checkpoint evaluates again (``restore``)."""
    if "eval" in self.compiling:
      self.compiling.pop("eval").join()
    splits, reps = self.run.splits, self.reps
    last, test_now, val_entry = epoch == self.config.num_epochs, True, None
    if self.select is not None:  # the test split only where the selection may land
      val_reports = self.evaluate_on(splits.val)
      val_entry = self.select.record(epoch, val_reports, reps is not None)
      self.log.print(f"epoch {epoch} validation accuracy"
                     f"{' (best so far)' if val_entry['improved'] else ''}:\n"
                     f"{replica_reports.console_table(val_reports, reps)}")
      test_now = val_entry["improved"] or last
    if test_now:
      self.reports = self.evaluate_on(splits.test)
      self.history[:] = [h for h in self.history if h["epoch"] != epoch]  # (a redone evaluation's)
      self.report = replica_reports.record_evaluation(self.reports, epoch, reps, self.history)
      if not last:
        self.log.print(f"epoch {epoch} test accuracy:\n"
                       f"{replica_reports.console_table(self.reports, reps)}")
    if val_entry is not None:
      self.log.write(step, "val", self.select.history[-1])
    if test_now:
      self.log.write(step, "eval", self.history[-1])
    self.times.stop("evaluation")

  def stop(self) -> dict:
    """Save a checkpoint at the current step (on a stop request) and say how to resume."""
    spe, step = self.run.steps_per_epoch, self.step
    self.settle()
    self.ckpt.save(step, self.state, resume.meta(self.config, step // spe, step, self.num_train,
                                                 step % spe))
    self.ckpt.wait()
    self.log.print(f"stopped at step {step} (step {step % spe or spe} of epoch "
                   f"{self.epoch_of(step)}); saved a checkpoint: rerun the same command to "
                   f"resume there")
    resume.STOP.clear()
    return {"stopped_at_step": step}

  def final_report(self, changes: list) -> dict:
    """The run's report (``report.json``, plots, console table), after the last epoch."""
    run, config, reps = self.run, self.config, self.reps
    if self.report is None:  # resumed after the last epoch had already finished
      join(self.compiling)
      self.reports = self.evaluate_on(run.splits.test)
      self.report = replica_reports.record_evaluation(self.reports, config.num_epochs, reps, [])
    result = self._result(changes)
    if jax.process_index() == 0:  # written before the final save is known to have finished
      names = splits_lib.class_names(run.splits)
      writer.write(result, run.splits.class_counts, self.workdir, "report.json",
                   evaluation=self.report, names=names)
      if reps:
        replica_reports.write_plots(self.reports, reps, run.splits.class_counts, self.workdir)
      print(f"final (epoch {self.report['epoch']}) test accuracy:\n"
            f"{replica_reports.console_table(self.reports, reps)}", flush=True)
      print(writer.worst_classes(self.report, run.splits.class_counts, names), flush=True)
      print(f"wall time {result['wall_time_s']:.1f} s: " + ", ".join(
          f"{k.replace('_', ' ')} {v:.1f}" for k, v in result["wall_time_parts_s"].items()),
            flush=True)
    if self.final_save_error is not None:
      raise self.final_save_error
    return result

  def _result(self, changes: list) -> dict:
    run, config, reps, history = self.run, self.config, self.reps, self.history
    result = {"final": self.report, "history": history,
              "train_images_per_s": (self.timed * config.batch_size * self.size / self.t_train
                                     if self.timed > 0 and self.t_train > 0 else None),
              "median_step_s": statistics.median(self.step_s) if self.step_s else None,
              "wall_time_s": time.time() - self.t_start,
              "wall_time_parts_s": self.times.parts(),
              "class_counts": run.splits.class_counts.tolist(),
              **({"dataset_class_ids": run.splits.class_ids.tolist()}  # Places-LT: renumbered classes
                 if run.splits.class_ids is not None else {}),
              "config": resume.config_json(config)}
    if changes:
      result["config_changes_on_resume"] = changes
    if config.report_best and history:
      result["best_epoch_selected_on_test_set"] = max(history, key=lambda h: h["top1"])
    if reps:
      result.update(replica_reports.summary(self.reports, reps))
    if self.select is not None:
      result["val_history"] = self.select.history
      result[selection.REPORT_KEY] = self.select.selected(history)
      for k, entry in enumerate(result.get("replicas", [])):
        entry[selection.REPORT_KEY] = self.select.selected(history, k)
    return result
