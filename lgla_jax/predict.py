"""Command line: ``python -m lgla_jax.predict --checkpoint=WORKDIR IMAGE_OR_FOLDER...``.

Labels new images with the run's class names and probabilities (the ensemble's; each
expert's too with ``--experts``), with the run's evaluation transform, and writes them as
CSV (``--out``, default ``predictions.csv``). An official ``.pth`` / ``.safetensors`` file
is read with ``--config`` (the run's config file). In a notebook::

  from lgla_jax import predict
  p = predict.Predictor("workdirs/demo")
  out = p(images_uint8)  # out["probs"], out["top_names"], out["top_probs"]
"""

from __future__ import annotations

import csv
import io
import sys

from absl import app, flags
from ml_collections import config_flags

from lgla_jax import errors
from lgla_jax.data.file_checks import readable
from lgla_jax.storage.paths import path
from lgla_jax.train.prediction import Predictor, find_images, read_image

__all__ = ["Predictor", "predict_files", "write_csv"]



def define_flags() -> None:
  """The command's flags (defined when it runs, not on import: a notebook or a test that
  imports this module next to ``lgla_jax.main`` defines none twice)."""
  flags.DEFINE_string("checkpoint", None, "A run's workdir (or a checkpoint folder), or an "
                      "official .pth/.safetensors file with --config.")
  config_flags.DEFINE_config_file("config", None, "The run's config file: needed for an official weights file.")
  flags.DEFINE_integer("top_k", 5, "How many classes to list per image.")
  flags.DEFINE_string("out", "predictions.csv", "The CSV file to write.")
  flags.DEFINE_boolean("experts", False, "Also list each expert's top classes.")
  flags.DEFINE_integer("replica", 0, "Which replica of a replica run predicts.")


def predict_files(predictor: Predictor, inputs, top_k: int = 5, experts: bool = False):
  """``(rows, unreadable)``: a CSV row (dict) per readable image of ``inputs`` (files and
  folders), and the files that could not be read."""
  rows, images, unreadable = [], [], []
  for file in find_images(inputs):
    try:
      images.append((file, read_image(file)))
    except errors.DataError:
      unreadable.append(readable(file))
  if not images:
    return rows, unreadable
  out = predictor([im for _, im in images], top_k)
  k = out["top_index"].shape[1]
  for n, (file, _) in enumerate(images):
    row = {"path": readable(file)}  # (a non-UTF-8 name as \xNN escapes: the CSV is UTF-8)
    for j in range(k):
      row[f"top{j + 1}"] = out["top_names"][n][j]
      row[f"prob{j + 1}"] = f"{out['top_probs'][n, j]:.6f}"
    if experts:
      for e, probs in enumerate(out["expert_probs"]):
        for j, c in enumerate(probs[n].argsort(kind="stable")[::-1][:k]):
          row[f"expert{e}_top{j + 1}"] = predictor.names[c]
          row[f"expert{e}_prob{j + 1}"] = f"{probs[n, c]:.6f}"
    rows.append(row)
  return rows, unreadable


def write_csv(rows: list[dict], out: str) -> None:
  """``rows`` as CSV at ``out`` (columns in the rows' order)."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  target = path(out)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text(buf.getvalue())


def main(argv):
  """The command line; bad input ends with one line and a non-zero status."""
  inputs, f = argv[1:], flags.FLAGS
  with errors.one_line_exit():
    if not f.checkpoint:
      raise errors.UsageError("--checkpoint=WORKDIR is required (a run's workdir)")
    if not inputs:
      raise errors.UsageError("give the images or folders to label after the flags")
    find_images(inputs)  # (a missing input or an empty folder fails before the model loads)
    predictor = Predictor(f.checkpoint, f.config, f.replica)
    rows, unreadable = predict_files(predictor, inputs, f.top_k, f.experts)
    if unreadable:
      print(f"skipped {len(unreadable)} unreadable image(s): {', '.join(unreadable)}", file=sys.stderr)
    if not rows:
      raise errors.DataError("no readable image to label")
    write_csv(rows, f.out)
    print(f"{len(rows)} image(s) labelled: {f.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
