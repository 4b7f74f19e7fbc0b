"""Evaluate a saved checkpoint (the official ``test.py -r`` equivalent).

Outputs (``eval_report.json``, ``confusion.npy``, the plots) go to the given workdir or, by
default, to ``eval/`` beside the checkpoints (or beside the weights file), never into a
training run's own files. The output folder is locked while the evaluation runs: a second
evaluation there, or one into the workdir of a running training (``--workdir=RUN``), is
refused; a new folder that a failed evaluation leaves empty is removed.
"""

from __future__ import annotations

import contextlib
import copy

import jax

from lgla_jax import errors, models
from lgla_jax.config import from_data
from lgla_jax.config.validate import validate
from lgla_jax.data import sources, splits as splits_lib
from lgla_jax.data.catalog import DATASETS
from lgla_jax.interop import convert, torch_file
from lgla_jax.models import pretrained
from lgla_jax.report import metrics, replicas as replica_reports, writer
from lgla_jax.storage import paths
from lgla_jax.train import checkpoint, evaluation, resume, run as run_lib
from lgla_jax.train import workdir as workdir_lib


# Files of weights under the official names (not an orbax checkpoint folder).
OFFICIAL_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz")


def without_starting_weights(config):
  """A copy of ``config`` that reads no pretrained or ``init_from`` weights: what is
  evaluated holds the whole network."""
  config = copy.deepcopy(config)
  config.model.pretrained, config.model.init_from = pretrained.PRETRAINED_NONE, None
  return config


EVAL_FOLDER = "eval"  # the default output folder, beside the checkpoints or the weights file


@contextlib.contextmanager
def _holding(out_dir: str):
  """Hold ``out_dir``'s lock for the evaluation (process 0); tidy it if it was new and the
  evaluation failed before writing anything."""
  if jax.process_index() != 0:
    yield
    return
  with workdir_lib.tidy_if_failed(out_dir), workdir_lib.lock(out_dir):
    yield


def model_limits(config, num_classes: int):
  """``torch_file.Limits`` for weights files of ``config``'s network (its tensors' shapes,
  traced without computing anything)."""
  model = models.build(config.model, num_classes)
  size = config.dataset.image_size
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), (size, size, 3)))
  return torch_file.Limits.for_shapes(x.shape for x in jax.tree.leaves(shapes))


def evaluate_checkpoint(config, path: str, workdir: str | None = None, mesh=None) -> dict:
  """Restore the checkpoint at ``path`` and evaluate it on the whole test set (a weights
  file under the official names, such as the official trainer's ``model_best.pth``, goes
  to ``evaluate_official``).

  The checkpoint's data set and network must be those of ``config`` (checked against the
  config saved with it); a replica run's checkpoint is evaluated for every replica
  (``replicas``, ``replica_mean``, ``replica_std`` next to the first replica's report). The
  report is written to ``workdir/eval_report.json`` (default: ``eval/`` beside the
  checkpoints; the folder is locked meanwhile).
  """
  if str(path).endswith(OFFICIAL_SUFFIXES) and paths.path(path).is_file():
    return evaluate_official(config, path, workdir, mesh)
  directory, _ = checkpoint.resolve(path)  # a missing path fails before the data is read
  out_dir = workdir or paths.display(paths.path(directory).parent / EVAL_FOLDER)
  with _holding(out_dir):
    return _evaluate_checkpoint(config, path, out_dir, mesh)


def _evaluate_checkpoint(config, path: str, out_dir: str, mesh) -> dict:
  config = without_starting_weights(config)
  ckpt, directory, step = checkpoint.open_step(path)
  try:
    meta = ckpt.read_meta(step)  # compared first: a mismatched state cannot even be read
    if "config" in meta:  # fields left to the data: as training filled them, not measured again
      config = from_data.take_saved(config, meta["config"])
    run = run_lib.setup(config, mesh)
    mesh, splits, state, steps, config = run.mesh, run.splits, run.state, run.steps, run.config
    if "config" in meta:
      differ = workdir_lib.config_changes(meta["config"], resume.config_json(config),
                                          only=workdir_lib.MUST_MATCH_FOR_EVAL,
                                          ignore=workdir_lib.NOT_READ_BY_EVAL)
      if differ:
        raise checkpoint.CheckpointError(
            f"checkpoint {directory}/{step} was trained on other data, another network or "
            f"other replicas than this config describes ({'; '.join(differ)}): evaluate it with the config it was "
            f"trained with")
    state, meta = ckpt.restore(step, checkpoint.abstract(state))
  finally:
    ckpt.close()
  reports = evaluation.evaluate_replicas(steps, state, splits.test, splits.class_counts, config,
                                         mesh)
  for r in reports:
    r["epoch"] = meta.get("epoch")  # completed epochs
    if meta.get("epoch_steps"):  # saved on a stop request, during the next epoch
      r["epoch_steps"] = meta["epoch_steps"]
  report = dict(reports[0], checkpoint=str(paths.path(directory) / str(step)))
  if run.replicas:  # the first replica's report, and every replica's with their mean and std
    report.update(replica_reports.summary(reports, run.replicas))
  if jax.process_index() == 0:
    names = splits_lib.class_names(splits)
    writer.write(report, splits.class_counts, out_dir, "eval_report.json", names=names)
    print(metrics.format_table(report))
    print(writer.worst_classes(report, splits.class_counts, names))
    if run.replicas:  # the error-bar (and tau-sweep) plots of training, for this checkpoint
      replica_reports.write_plots(reports, run.replicas, splits.class_counts, out_dir)
      print(replica_reports.format_table(reports, run.replicas))
  return report


def evaluate_official(config, path: str, workdir: str | None = None, mesh=None,
                      splits=None) -> dict:
  """Evaluate an official PyTorch checkpoint (``model_best.pth``: ``state_dict``, ``epoch``,
  ``monitor_best``, ``config``), a plain ``state_dict`` file or ``lgla_jax.export``'s
  output with the network of ``config``, on the whole test set. Every tensor is checked
  against the network (the error names the mismatching ones); the file is read within
  ``model_limits`` (a file stating larger tensors than the network has is refused before
  they are read). The report goes to ``workdir/eval_report.json`` (default: ``eval/``
  beside the file). ``splits``: in-memory data instead of ``config.dataset``'s."""
  if config.replicas.seeds:
    raise errors.ConfigError("config.replicas.seeds: an official checkpoint holds one "
                                "model; evaluate it with a single-run config")
  config = without_starting_weights(config)
  validate(config)  # (before its network is built to size the reading)
  # Fields left to the data are measured before the data is read: the image size decides
  # how it is read (decoded into memory or kept as files).
  config = from_data.resolve(config, splits.train.images if splits is not None else None)
  if splits is None and config.dataset.name not in DATASETS:
    splits = sources.load(config.dataset)  # own data: its classes are counted in the files
  limits = model_limits(config, splits.num_classes if splits is not None
                        else DATASETS[config.dataset.name].num_classes)
  official = (torch_file.read_checkpoint(path, limits) if path.endswith((".pth", ".pt"))
              else {"state_dict": convert.read_state_dict(path, "the weights file", "", limits),
                    "epoch": None})
  out_dir = workdir or paths.display(paths.path(paths.display(path)).parent / EVAL_FOLDER)
  with _holding(out_dir):
    run = run_lib.setup(config, mesh, splits)
    state = run_lib.load_weights(run.state, lambda p, s: convert.load_official_model(
        p, s, official["state_dict"], path), None)
    report = dict(evaluation.run_evaluation(run.steps, state, run.splits.test,
                                            run.splits.class_counts, config, run.mesh),
                  checkpoint=paths.display(path), epoch=official["epoch"])
    if official.get("monitor_best") is not None:
      report["official_monitor_best"] = official["monitor_best"]
    if jax.process_index() == 0:
      names = splits_lib.class_names(run.splits)
      writer.write(report, run.splits.class_counts, out_dir, "eval_report.json", names=names)
      print(metrics.format_table(report))
      print(writer.worst_classes(report, run.splits.class_counts, names))
  return report
