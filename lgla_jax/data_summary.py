"""Command line: ``python -m lgla_jax.data_summary --config=configs/NAME.py [--workdir=DIR]``.

Reads the config's data set and prints what it looks like before training: the classes and
their training counts, the imbalance factor and the many/medium/few split; with ``--workdir``
also writes the bar plot of the counts (``class_counts.png``) and ``classes.txt`` there.
"""

from __future__ import annotations

import copy

from absl import app, flags
from ml_collections import config_flags

from lgla_jax import errors
from lgla_jax.config import from_data
from lgla_jax.config.validate import validate
from lgla_jax.data import sources, splits as splits_lib
from lgla_jax.report import data_summary



def define_flags() -> None:
  """The command's flags (defined when it runs, not on import, as ``predict``'s)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
  flags.DEFINE_string("workdir", None, "Where the plot and classes.txt go (none: print only).")
  flags.DEFINE_integer("many_shot_min", None, "Many-shot: more images than this (default: "
                       "the config's eval.many_shot_min, officially 100).")
  flags.DEFINE_integer("few_shot_max", None, "Few-shot: fewer images than this (default: the "
                       "config's eval.few_shot_max, officially 20).")


def summarize_config(config, workdir=None, many_shot_min: int | None = None,
                     few_shot_max: int | None = None) -> dict:
  """Read the data of ``config``, print its summary, write plot and names into ``workdir``
  (fields the config leaves to the data are measured and printed first, as a run does).
  The shot thresholds default to ``config.eval``'s; given ones are checked as those are."""
  config = copy.deepcopy(config)
  for name, value in (("many_shot_min", many_shot_min), ("few_shot_max", few_shot_max)):
    if value is not None:
      config.eval[name] = value
  validate(config)
  config = from_data.resolve(config)
  splits = sources.load(config.dataset)
  summary = data_summary.summarize(splits.class_counts, splits_lib.class_names(splits),
                                   config.eval.many_shot_min, config.eval.few_shot_max)
  print("\n".join(data_summary.lines(summary)))
  if workdir:
    print(f"  plot: {data_summary.write_plot(summary, workdir)}")
    data_summary.write_class_names(summary["names"], workdir)
  return summary


def main(argv):
  """The command line; bad input ends with one line and a non-zero status."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.config is None:
    raise app.UsageError("--config=configs/NAME.py is required")
  with errors.one_line_exit(usage=(ValueError,)):
    summarize_config(f.config, f.workdir, f.many_shot_min, f.few_shot_max)


if __name__ == "__main__":
  define_flags()
  app.run(main)
