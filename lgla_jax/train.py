"""``train_and_evaluate(config, workdir)``: the training loop and its jitted steps."""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental.compilation_cache import compilation_cache

from lgla_jax import checkpoint, configlib, convert, datasets, device_data, evaluation, feed
from lgla_jax import input_pipeline
from lgla_jax import losses, models
from lgla_jax import optim, progress, replicas, reporting, resume, sharding, state as state_lib
from lgla_jax import selection
from lgla_jax import workdir as workdir_lib
from lgla_jax.steps import ReplicaAxis, Steps, make_steps


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
  state: state_lib.TrainState  # freshly initialised (or pretrained), placed on the mesh (state.shardings)
  steps: Steps
  config: object  # the config with its automatic choices made (``resolve_placement``)
  replicas: replicas.Replicas | None = None  # a replica run's replicas (None: a single run)
  compiling: dict[str, threading.Thread] = dataclasses.field(default_factory=dict)  # ``setup``


def resolve_placement(config, splits: datasets.DataSplits, mesh):
  """A copy of ``config`` with the automatic choices made, so that the checkpoint records
  (and a resume compares) what actually runs: ``dataset.on_device`` (in-memory data under
  ``device_data.AUTO_LIMIT_BYTES``), ``augment.on_device`` (where the data is, for the cifar
  recipe) and ``steps_per_dispatch`` (1 on CPU, 8 on accelerators)."""
  config = copy.deepcopy(config)
  size = device_data.nbytes(splits)
  cpu = sharding.on_cpu(mesh)
  if config.dataset.on_device is None:  # host augmentation needs the images on the host
    config.dataset.on_device = (config.augment.on_device is not False
                                and config.augment.recipe == "cifar"  # the on-device recipe
                                and size is not None and size <= device_data.AUTO_LIMIT_BYTES)
  if config.dataset.on_device and size is None:
    raise configlib.ConfigError("config.dataset.on_device: this data set's images are files; "
                                "set it to False")
  if config.augment.on_device is None:
    config.augment.on_device = config.augment.recipe == "cifar" and config.dataset.on_device
  if config.dataset.on_device and not config.augment.on_device:
    raise configlib.ConfigError("config.augment.on_device: False augments on the host, which "
                                "needs dataset.on_device=False")
  if not config.steps_per_dispatch:
    config.steps_per_dispatch = 1 if cpu else 8
  if config.replicas.mode == "auto":  # measured: replicas.MODES
    config.replicas.mode = "unrolled" if cpu and config.replicas.shards == 1 else "vmap"
  return config


def setup(config, mesh=None, splits=None, compile_ahead: bool = False) -> Run:
  """Validate, read the data (unless given), build model, loss, optimizer, steps and state.
  ``compile_ahead``: the training step and the first evaluation's step compile in
  background threads (``Run.compiling``) while the state is made."""
  mesh = mesh or sharding.make_mesh()
  configlib.validate(config, num_devices=mesh.size)
  reps = replicas.of(config)
  if reps and not sharding.has_replicas(mesh):  # the same devices, with a replica axis
    if jax.process_count() > 1 and jax.local_device_count() % reps.shards:
      raise configlib.ConfigError(
          f"config.replicas.shards: {reps.shards} must divide each process's "
          f"{jax.local_device_count()} devices (every process holds all replica groups)")
    mesh = sharding.make_mesh(list(mesh.devices.flat), reps.shards)
  splits = splits or datasets.load(config.dataset)
  config = resolve_placement(config, splits, mesh)
  dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
  model = models.build(config.model, splits.num_classes, dtype)
  if reps:
    loss_fn = None
    fns, index = replicas.loss_functions(config, reps, splits.class_counts,
                                         config.model.num_experts, model.logit_scale)
    replica_axis = ReplicaAxis(reps.seeds, fns, index, mode=config.replicas.mode)
  else:
    loss_fn = losses.make(config.loss, splits.class_counts, config.model.num_experts, model.logit_scale)
    replica_axis = None
  if config.batch_size > len(splits.train.labels):
    raise configlib.ConfigError(f"config.batch_size: {config.batch_size} is larger than the "
                                f"{len(splits.train.labels)} training images; lower it")
  spe = input_pipeline.steps_per_epoch(len(splits.train.labels), config.batch_size,
                                       config.drop_last_batch)
  tx, lr_table = optim.make_optimizer(config.optim, config.num_epochs, spe)
  if reps and reps.lrs:  # one optimizer per rate; the log shows the first replica's
    made, tx_index = replicas.optimizers(config, reps, spe)
    if len(made) == 1:  # one rate for every replica: the run's optimizer, at that rate
      tx, lr_table = made[0]
    else:
      replica_axis = dataclasses.replace(replica_axis, optimizers=tuple(tx for tx, _ in made),
                                         optimizer_index=tx_index)
      lr_table = made[tx_index[0]][1]
  if config.dataset.on_device and splits.val is not None:  # (its eval step reads test images)
    raise configlib.ConfigError("config.dataset.on_device: device-resident data holds the "
                                "training and test splits only; a validation split needs False")
  size = config.dataset.image_size
  image_shape = (size, size, 3)
  in_memory = isinstance(splits.train.images, np.ndarray)
  if in_memory and splits.train.images.shape[1:] != image_shape:
    raise configlib.ConfigError(f"config.dataset.image_size={size} but the images are "
                                f"{splits.train.images.shape[1:]}")
  rngs = (jnp.stack([jax.random.PRNGKey(s) for s in reps.seeds]) if reps
          else jax.random.PRNGKey(config.seed))
  steps = make_steps(model, tx, loss_fn, mean=config.dataset.mean, std=config.dataset.std,
                     steps_per_epoch=spe, mesh=mesh,
                     xla_cpu_fast_elementwise=config.xla_cpu_fast_elementwise,
                     device_data=device_data.put(splits, mesh) if config.dataset.on_device else None,
                     augment_config=config.augment if config.augment.on_device else None,
                     seed=config.seed, replicas=replica_axis,
                     bn_group_size=config.model.get("bn_group_size", 0))
  init = state_lib.initializer(model, tx, rngs, image_shape, mesh)
  run = Run(mesh, splits, model, tx, lr_table, spe, None, steps, config, reps)
  compiling = {}
  if compile_ahead:  # (what the training loop runs first: the training step, then this split)
    run = dataclasses.replace(run, state=jax.eval_shape(init))  # (shapes and shardings only)
    compiling = {"train": feed.compile_in_background(run), "eval": evaluation.compile_in_background(
        steps, run.state, splits.val if splits.val is not None else splits.test, config, mesh)}
  try:
    state = init()
    weights = configlib.pretrained_file(config.model)
    if weights and not config.model.init_from:
      state = load_weights(state, lambda p, s: model.load_pretrained(p, s, weights), reps)
    if config.model.init_from:
      whole = convert.read_state_dict(
          config.model.init_from, "config.model.init_from: the weights",
          "give an official checkpoint (model_best.pth), a state_dict .pth/.npz or an "
          "lgla_jax.export .safetensors file")
      state = load_weights(state, lambda p, s: convert.load_official_model(
          p, s, whole, config.model.init_from), reps)
  except BaseException:
    _join(compiling)
    raise
  return dataclasses.replace(run, state=state, compiling=compiling)


def load_weights(state, load, reps):
  """``load(params, model_state) -> (params, model_state)`` applied to the state (to every
  replica's: whatever the weights do not hold keeps each one's own initialisation)."""
  params, model_state = jax.device_get((state.params, state.model_state))
  if reps is None:
    params, model_state = load(params, model_state)
  else:
    loaded = [load(*jax.tree.map(lambda x, k=k: x[k], (params, model_state)))
              for k in range(reps.size)]
    params, model_state = jax.tree.map(lambda *xs: np.stack(xs), *loaded)
  placed = jax.tree.map(lambda x, ref: jax.device_put(x, ref.sharding), (params, model_state),
                        (state.params, state.model_state))
  return state.replace(params=placed[0], model_state=placed[1])


def train_and_evaluate(config, workdir: str, splits: datasets.DataSplits | None = None,
                       mesh=None) -> dict:
  """Train (resuming from the latest checkpoint in ``workdir``), evaluate, write the report.
  ``splits``: in-memory data to use instead of reading ``config.dataset`` (a notebook's
  arrays, the benchmark's synthetic data); ``mesh``: the devices (default: all of them).

  Returns the report, or ``{"stopped_at_step": N}`` when stopped early (SIGTERM, SIGINT or
  ``request_stop``) after saving a checkpoint at step N. Raises
  ``progress.TrainingDiverged`` when the loss or gradient norm stops being finite (nothing
  is saved after the last finite step), ``checkpoint.CheckpointError`` when a checkpoint
  cannot be written, ``workdir.WorkdirError`` when another run holds the workdir.
  """
  if jax.process_index() != 0:  # one run of several processes: process 0 holds the lock
    return _train_and_evaluate(config, workdir, splits, mesh)
  with workdir_lib.lock(workdir):
    return _train_and_evaluate(config, workdir, splits, mesh)


def _set_compilation_cache(config, workdir: str):
  """Compiled steps persist in WORKDIR/compilation_cache (or the configured folder, or else
  JAX's own ``JAX_COMPILATION_CACHE_DIR``: one cache shared by many workdirs), so a rerun or
  a resume does not compile again. The cache is process-wide: a later run in the same
  process (a notebook, the tests) moves it to its own folder."""
  path = config.compilation_cache_dir
  if path is None:
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(workdir, "compilation_cache")
  path = os.path.abspath(path) if path else None
  if path != jax.config.jax_compilation_cache_dir:
    compilation_cache.reset_cache()  # (otherwise the first folder of the process stays in use)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _train_and_evaluate(config, workdir: str, splits=None, mesh=None) -> dict:
  t_start = time.time()
  _set_compilation_cache(config, workdir)
  run = setup(config, mesh, splits, compile_ahead=True)
  try:
    return _run(run, workdir, t_start)
  finally:
    _join(run.compiling)


def _join(compiling: dict):
  """Wait for background compilations: a thread still in the compiler when the process
  exits (an error, an interrupt) aborts the interpreter."""
  for thread in compiling.values():
    thread.join()


def _run(run: Run, workdir: str, t_start: float) -> dict:
  config = run.config  # automatic choices made: the checkpoint records what runs
  mesh, splits, lr_table, spe, state, steps = (run.mesh, run.splits, run.lr_table,
                                               run.steps_per_epoch, run.state, run.steps)
  reps = run.replicas
  size = reps.size if reps else 1  # images per step: this many batches
  log = progress.Logger(workdir)
  num_train = len(splits.train.labels)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  finished = False
  try:
    state, changes = resume.restore_latest(ckpt, state, config, mesh, num_train, log)
    step = start_step = int(jax.device_get(state.step))
    total_steps = spe * config.num_epochs
    select = (selection.ValSelection(resume.earlier_evaluations(workdir, start_step, "val"), size)
              if splits.val is not None else None)
    log.print(progress.run_summary(run, select is not None))
    prog = progress.Progress(config, total_steps, lr_table, log, replicas=size)
    history = resume.earlier_evaluations(workdir, start_step)
    pending, report, t_train, timed, final_save_error = None, None, 0.0, 0, None
    # The training and evaluation steps compile in the background since the setup
    # (``run.compiling``): joined before their first use, their calls find them compiled.
    compiling = dict(run.compiling)
    times = progress.Stopwatch(t_start)
    # (reads the loop's current state when called)
    evaluate_on = lambda split: evaluation.evaluate_replicas(steps, state, split,
                                                             splits.class_counts, config, mesh)
    t_last = time.time()
    epoch_of = lambda k: (k - 1) // spe + 1
    last_good = lambda: (f"{ckpt.directory}/{ckpt.latest_step()}"
                         if ckpt.latest_step() is not None else None)
    chunked = config.steps_per_dispatch > 1

    def settle():  # fetch and check the pending steps: nothing is saved past a non-finite one
      nonlocal pending
      if pending is not None:
        metrics, end, n = pending
        fetched = jax.device_get(metrics)
        for i in range(n):
          one = jax.tree.map(lambda x: x[i], fetched) if chunked else fetched
          at = end - n + 1 + i
          progress.check_finite(one, at, epoch_of(at), last_good(), reps and reps.label)
          prog.add(one)
        pending = None

    evaluates = lambda e: bool(config.eval_every_epochs and e % config.eval_every_epochs == 0
                               or e == config.num_epochs)

    def evaluate_epoch(epoch, step):
      """The epoch's evaluations: the validation split where the epoch is selected on it, the
      test split where the selection may land (always at the last epoch). Both are logged
      after both ran: a process killed in between leaves no half record, and its resume
      from this epoch's checkpoint evaluates again (below)."""
      nonlocal report, reports
      if "eval" in compiling:
        compiling.pop("eval").join()
      last, test_now, val_entry = epoch == config.num_epochs, True, None
      if select is not None:  # the test split only where the selection may land
        val_reports = evaluate_on(splits.val)
        val_entry = select.record(epoch, val_reports, reps is not None)
        log.print(f"epoch {epoch} validation accuracy"
                  f"{' (best so far)' if val_entry['improved'] else ''}:\n"
                  f"{replicas.console_table(val_reports, reps)}")
        test_now = val_entry["improved"] or last
      if test_now:
        reports = evaluate_on(splits.test)
        history[:] = [h for h in history if h["epoch"] != epoch]  # (a redone evaluation's)
        report = replicas.record_evaluation(reports, epoch, reps, history)
        if not last:
          log.print(f"epoch {epoch} test accuracy:\n{replicas.console_table(reports, reps)}")
      if val_entry is not None:
        log.write(step, "val", select.history[-1])
      if test_now:
        log.write(step, "eval", history[-1])
      times.stop("evaluation")

    logged = select.history if select is not None else history
    if (start_step and start_step % spe == 0 and evaluates(start_step // spe)
        and all(h["epoch"] != start_step // spe for h in logged)):
      log.print(f"epoch {start_step // spe}'s evaluation was interrupted: evaluating it again")
      times.start()
      evaluate_epoch(start_step // spe, start_step)
    with resume.stop_on_signals():
      for n, batch in feed.dispatches(run, start_step, total_steps):
        if "train" in compiling:
          compiling.pop("train").join()
        state, metrics = (steps.train_chunk if chunked else steps.train)(state, batch)
        times.dispatched()
        settle()  # the previous dispatch's metrics, fetched while this one runs
        ckpt.check()  # a failed asynchronous save stops the run now, not at its end
        step += n
        pending = (metrics, step, n)
        now = time.time()
        if step > start_step + n:  # steady state: the first dispatch after a (re)start compiles
          t_train, timed = t_train + now - t_last, timed + n
        t_last = now
        epoch = epoch_of(step)
        prog.maybe_report(step, epoch, n)
        if step % spe == 0:  # end of an epoch
          settle()
          last = epoch == config.num_epochs
          times.start()
          if (config.checkpoint_every_epochs and epoch % config.checkpoint_every_epochs == 0) or last:
            # Saved before evaluating: a failing evaluation cannot lose the epoch's training.
            try:
              ckpt.save(step, state, resume.meta(config, epoch, step, num_train))
            except checkpoint.CheckpointError as e:
              if not last:
                raise
              final_save_error = e  # the final report is still written, then this is raised
          times.stop("checkpoint")
          if evaluates(epoch):
            evaluate_epoch(epoch, step)
          t_last = time.time()  # evaluation and saving are not training time
        if resume.STOP.is_set() and step < total_steps:
          settle()
          ckpt.save(step, state, resume.meta(config, step // spe, step, num_train, step % spe))
          ckpt.wait()
          log.print(f"stopped at step {step} (step {step % spe or spe} of epoch {epoch_of(step)}); "
                    f"saved a checkpoint: rerun the same command to resume there")
          resume.STOP.clear()
          finished = True
          return {"stopped_at_step": step}
      settle()
    resume.STOP.clear()  # (a stop asked during the last evaluations: the run is done anyway)
    if report is None:  # resumed after the last epoch had already finished
      _join(compiling)
      reports = evaluate_on(splits.test)
      report = replicas.record_evaluation(reports, config.num_epochs, reps, [])
    result = {"final": report, "history": history,
              "train_images_per_s": (timed * config.batch_size * size / t_train
                                     if timed > 0 and t_train > 0 else None),
              "wall_time_s": time.time() - t_start, "wall_time_parts_s": times.parts(),
              "class_counts": splits.class_counts.tolist(),
              **({"dataset_class_ids": splits.class_ids.tolist()}  # Places-LT: renumbered classes
                 if splits.class_ids is not None else {}),
              "config": resume.config_json(config)}
    if changes:
      result["config_changes_on_resume"] = changes
    if config.report_best and history:
      result["best_epoch_selected_on_test_set"] = max(history, key=lambda h: h["top1"])
    if reps:
      result.update(replicas.summary(reports, reps))
    if select is not None:
      result["val_history"] = select.history
      result[selection.REPORT_KEY] = select.selected(history)
      for k, entry in enumerate(result.get("replicas", [])):
        entry[selection.REPORT_KEY] = select.selected(history, k)
    if jax.process_index() == 0:  # written before the final save is known to have finished
      reporting.write(result, splits.class_counts, workdir, "report.json", evaluation=report)
      if reps:
        replicas.write_plots(reports, reps, splits.class_counts, workdir)
      print(f"final (epoch {report['epoch']}) test accuracy:\n{replicas.console_table(reports, reps)}", flush=True)
      print(f"wall time {result['wall_time_s']:.1f} s: " + ", ".join(
          f"{k.replace('_', ' ')} {v:.1f}" for k, v in result["wall_time_parts_s"].items()),
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

