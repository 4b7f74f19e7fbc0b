"""Validation of a whole config before anything compiles: the first problem raises
``ConfigError`` naming the field.

Each section's own fields are checked by what owns them: the data sources
(``data.sources.problems``), the augmentation recipes (``augment.recipes.problems``), the
models, the losses, the schedules (``optim.problems``) and the replica fields
(``config.replicas.problems``). What is left here are the rules across sections.
"""

from __future__ import annotations

import math

import ml_collections

from lgla_jax import losses, models, optim
from lgla_jax.augment import recipes
from lgla_jax.config import from_data, replicas
from lgla_jax.config.defaults import DTYPES, base_config
from lgla_jax.data import sources
from lgla_jax.errors import fail


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raise ``ConfigError`` naming the first unknown or inconsistent field (``num_devices``:
  also check what must divide over the devices)."""
  _check_keys(c, base_config(), "")
  _check_finite(c, "")
  for problem in from_data.problems(c):
    fail(*problem)
  if from_data.unresolved(c):  # fields left to the data: the others checked meanwhile
    c = from_data.provisional(c)
  found = sources.problems(c.dataset) + _data_rules(c) + recipes.problems(c.augment)
  if not found:  # (the recipe is known)
    found += _augment_rules(c)
  found += models.problems(c.model) + _model_rules(c)
  found += losses.problems(c.loss, c.model.num_experts, c.model.use_norm)
  found += optim.problems(c.optim) + _run_rules(c) + _eval_rules(c)
  found += replicas.problems(c, num_devices)
  found += _device_rules(c, num_devices)
  if found:
    fail(*found[0])


def _data_rules(c) -> list[tuple[str, str]]:
  d, found = c.dataset, []
  if d.select_on == "val" and c.report_best:
    found.append(("report_best", "chooses on the test set; with dataset.select_on='val' the "
                  "report already has the validation-selected epoch: set it to False"))
  if d.select_on == "val" and not c.eval_every_epochs:
    found.append(("dataset.select_on", "'val' selects among evaluated epochs: set "
                  "eval_every_epochs >= 1"))
  return found


def _augment_rules(c) -> list[tuple[str, str]]:
  d, a, found = c.dataset, c.augment, []
  if recipes.RECIPES[a.recipe].on_files == sources.in_memory(d):
    found.append(("augment.recipe", f"{a.recipe!r} does not fit dataset.source={d.source!r}: "
                  f"the recipes {_names(False)} work on in-memory images, {_names(True)} on "
                  f"image files"))
  if d.on_device and a.on_device is False:
    found.append(("augment.on_device", "False augments on the host, which needs the images "
                  "there: set dataset.on_device=False too, or augment.on_device=True"))
  return found


def _names(on_files: bool) -> str:
  return "/".join(n for n, r in recipes.RECIPES.items() if r.on_files == on_files)


def _model_rules(c) -> list[tuple[str, str]]:
  m = c.model
  if m.bn_group_size < 0 or (m.bn_group_size and c.batch_size % m.bn_group_size):
    return [("model.bn_group_size", f"must be 0 or divide batch_size={c.batch_size}, got "
             f"{m.bn_group_size}")]
  return []


def _run_rules(c) -> list[tuple[str, str]]:
  found = []
  for field in ("num_epochs", "batch_size", "eval_batch_size", "log_every_steps"):
    if c[field] <= 0:
      found.append((field, f"must be positive, got {c[field]}"))
  for field in ("eval_every_epochs", "checkpoint_every_epochs", "num_workers", "steps_per_dispatch"):
    if c[field] < 0:
      found.append((field, f"must be >= 0, got {c[field]}"))
  if c.keep_checkpoints < 1:
    found.append(("keep_checkpoints", f"must be >= 1, got {c.keep_checkpoints}"))
  if c.dtype not in DTYPES:
    found.append(("dtype", f"must be one of {DTYPES}, got {c.dtype!r}"))
  return found


def _eval_rules(c) -> list[tuple[str, str]]:
  """The shot thresholds: positive whole numbers, the few-shot one below the many-shot one."""
  e, found = c.eval, []
  for field in ("many_shot_min", "few_shot_max"):
    value = e[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      found.append((f"eval.{field}", f"must be a positive whole number of training images, "
                    f"got {value!r}"))
  if not found and e.few_shot_max >= e.many_shot_min:
    found.append(("eval.few_shot_max", f"{e.few_shot_max} must be below eval.many_shot_min="
                  f"{e.many_shot_min} (few-shot: fewer images than few_shot_max; many-shot: "
                  f"more than many_shot_min; medium: between)"))
  return found


def _device_rules(c, num_devices) -> list[tuple[str, str]]:
  if not num_devices:
    return []
  groups = c.replicas.shards if c.replicas.seeds else 1
  per_group = num_devices // groups  # every replica's batch is split over its group
  return [(field, f"{c[field]} is not divisible by the {per_group} devices "
           f"{'of each replica group' if groups > 1 else ''}".rstrip())
          for field in ("batch_size", "eval_batch_size") if c[field] % per_group]


def _check_finite(c, prefix):
  """Every number of the config is finite: ``inf`` is refused as ``nan`` is (neither is a
  rate, a strength or a size)."""
  for key in c.keys():
    value = c[key]
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, prefix + key + ".")
    elif any(isinstance(v, float) and not math.isfinite(v)
             for v in (value if isinstance(value, (tuple, list)) else (value,))):
      fail(prefix + key, f"must be a finite number, got {value}")


def _check_keys(c, reference, prefix):
  for key in c.keys():
    if key not in reference:
      near = [k for k in reference.keys() if k[:3] == key[:3]]
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      fail(prefix + key, f"unknown field{hint}")
    if isinstance(c[key], ml_collections.ConfigDict):
      _check_keys(c[key], reference[key], prefix + key + ".")
