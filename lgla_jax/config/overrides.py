"""Config fields set from outside a config file, on the command line or in a notebook.

Both go through ``check``: a field that the chosen loss, schedule, model, augmentation
recipe or data source does not read is refused, because the run would train exactly what
it trains without it. ``load`` is the notebook's way to the command line's
``--config=configs/NAME.py:ARG --config.FIELD=VALUE``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Iterable, Mapping

import ml_collections

from lgla_jax import losses, models, optim
from lgla_jax.augment import recipes
from lgla_jax.data import sources
from lgla_jax.errors import ConfigError, fail


def check(c: ml_collections.ConfigDict, overridden: Iterable[str]) -> None:
  """Raise ``ConfigError`` for a field set from outside the config file (``overridden``:
  dotted paths such as ``loss.tau``) that the configured loss, schedule, model,
  augmentation recipe or data source does not read. Fields a config file sets for another
  one are not refused (switching ``optim.schedule`` leaves them unused, as intended)."""
  readers = {  # section -> (what reads its fields, the field choosing it, name -> fields it reads)
      "loss": ("loss", "name", {n: s.fields for n, s in losses.REGISTRY.items()}),
      "optim": ("schedule", "schedule", optim.SCHEDULE_FIELDS),
      "model": ("model", "name", {n: s.fields for n, s in models.REGISTRY.items()}),
      "augment": ("recipe", "recipe", {n: r.fields for n, r in recipes.RECIPES.items()}),
      "dataset": ("data source", "source", sources.source_fields())}
  for path in overridden:
    section, _, field = path.partition(".")
    if section not in readers:
      continue
    kind, selector, table = readers[section]
    chosen = c[section][selector]
    if chosen not in table:
      continue  # an unknown name: validate() names it
    users = sorted(n for n, fields in table.items() if field in fields)
    read = table[chosen]
    if users and field not in read:  # a field no entry reads (lr, loss.name) is common to all
      fail(path, f"the {kind} {chosen!r} does not read it (it reads "
            f"{', '.join(read) or 'no field'}), so the override would change nothing: drop "
            f"it, or choose a {kind} that reads it with config.{section}.{selector} "
            f"({', '.join(users)})")


def load(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config of ``spec`` (``"configs/NAME.py"`` or ``"configs/NAME.py:ARG"``, as
  ``--config=``) with ``overrides`` (``{"loss.tau": 2.0}``, as ``--config.loss.tau=2.0``)
  set and checked as on the command line: an unknown field, a value of the wrong type or a
  field the chosen method does not read raises ``ConfigError`` naming it."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} not found (configs/NAME.py, optionally :ARG)")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  c = module.get_config(arg) if arg else module.get_config()
  overrides = dict(overrides or {})
  for dotted, value in overrides.items():
    *sections, field = dotted.split(".")
    node = c
    for name in sections:
      node = node[name] if name in node else fail(dotted, f"no section {name!r}")
      if not isinstance(node, ml_collections.ConfigDict):
        fail(dotted, f"{name!r} is a field, not a section")
    if field not in node:
      fail(dotted, "unknown field")
    try:
      node[field] = value
    except (TypeError, ValueError) as e:
      fail(dotted, f"{value!r}: {e}")
  check(c, overrides)
  return c
