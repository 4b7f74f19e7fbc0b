"""Write an evaluation report: JSON, the confusion matrix, and its plots (PNG).

Plots: per-class accuracy against training count (log x, shot groups shaded), per-expert
accuracy by shot group, the confusion of the rarest classes, and the reliability diagram
of the ensemble prediction.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from lgla_jax.report import metrics
from lgla_jax.storage import paths
from lgla_jax.storage.paths import path

PLOTS = ("per_class_accuracy.png", "expert_accuracy.png", "rare_confusion.png", "reliability.png")
_GROUP_COLOURS = {"many": "#dbe9f6", "medium": "#fde9d9", "few": "#e2f0d9"}


def strict(value, path: str = "", found: list | None = None):
  """``value`` with every non-finite float replaced by None (strict JSON); the paths of
  the replaced values are appended to ``found``."""
  found = [] if found is None else found
  if isinstance(value, dict):
    return {k: strict(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
  if isinstance(value, (float, np.floating)) and not np.isfinite(value):
    found.append(path)
    return None
  if isinstance(value, np.generic):
    return value.item()
  return value


def write_json(path: str, body: dict) -> list[str]:
  """Write ``body`` as strict JSON, atomically (a temporary file, then a rename). Non-finite
  values become null and are listed under ``non_finite``. A well-formed report already at
  ``path`` is never replaced by one with non-finite values: that one goes to
  ``<name>.non_finite.json``. Returns the non-finite paths."""
  found = []
  body = strict(body, found=found)
  if found:
    body["non_finite"] = found
    path = str(path)
    if paths.path(path).exists():
      try:
        if "non_finite" not in json.loads(paths.path(path).read_text()):
          path = path[:-len(".json")] + ".non_finite.json" if path.endswith(".json") else path + ".non_finite"
      except (OSError, ValueError):
        pass
  paths.write_atomic(path, json.dumps(body, indent=1, allow_nan=False))
  return found


def write(report: dict, class_counts, directory: str, name: str = "report.json",
          evaluation: dict | None = None, names=None) -> None:
  """``report`` as strict JSON in ``directory/name`` (``write_json``); the confusion matrix
  of ``evaluation`` (the accuracy report, default ``report``) as ``confusion.npy``, the
  per-class table (``per_class.csv``, classes by ``names``: default their index) and the
  plots beside it."""
  directory = paths.path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  evaluation = report if evaluation is None else evaluation
  confusion = np.asarray(evaluation.get("confusion", []))
  strip = lambda d: {k: v for k, v in d.items() if k != "confusion"}
  body = strip(report)
  if "final" in body:
    body["final"] = strip(body["final"])
  write_json(directory / name, body)
  if confusion.size:
    buffer = io.BytesIO()  # np.save into memory, then one write (a bucket takes no seek)
    np.save(buffer, confusion)
    paths.write_atomic(directory / "confusion.npy", buffer.getvalue())
    write_per_class(evaluation, class_counts, directory, names)
    write_plots(evaluation, class_counts, directory, names)


def per_class_rows(evaluation: dict, class_counts, names=None) -> list[dict]:
  """One row per class: its name, training images, test images and test accuracy (None
  without test images), in class index order."""
  counts = np.asarray(class_counts)
  names = _names(names, len(counts))
  confusion = np.asarray(evaluation.get("confusion", []))
  seen = confusion.sum(1) if confusion.size else None
  return [{"class": names[c], "train_images": int(counts[c]),
           "test_images": None if seen is None else int(seen[c]),
           "accuracy": evaluation["per_class"][c]} for c in range(len(counts))]


def worst_classes(evaluation: dict, class_counts, names=None, k: int = 5) -> str:
  """A line naming the ``k`` classes of lowest test accuracy (rarer first among equals)."""
  rows = [r for r in per_class_rows(evaluation, class_counts, names) if r["accuracy"] is not None]
  rows.sort(key=lambda r: (r["accuracy"], r["train_images"]))
  return "worst classes: " + ", ".join(
      f"{r['class']} {100 * r['accuracy']:.1f}% (n={r['train_images']})" for r in rows[:k])


def write_per_class(evaluation: dict, class_counts, directory: str, names=None) -> str:
  """``per_class.csv`` (``per_class_rows``) in ``directory``; its path."""
  buf = io.StringIO()
  table = csv.DictWriter(buf, fieldnames=["class", "train_images", "test_images", "accuracy"])
  table.writeheader()
  for row in per_class_rows(evaluation, class_counts, names):
    table.writerow(dict(row, accuracy="" if row["accuracy"] is None else f"{row['accuracy']:.6f}",
                        test_images="" if row["test_images"] is None else row["test_images"]))
  target = path(directory) / "per_class.csv"
  target.write_text(buf.getvalue())
  return str(target)


def _names(names, num_classes: int) -> list[str]:
  """The class names to show: ``names``, or each class's index as text."""
  if names is None:
    return [str(c) for c in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for {num_classes} classes")
  return [str(n) for n in names]


def write_plots(evaluation: dict, class_counts, directory: str, names=None) -> list[str]:
  """Write an evaluation's plots (``PLOTS``) into ``directory`` (classes shown by ``names``,
  default their index); their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  counts = np.asarray(class_counts)
  written = []

  def save(fig, name):
    path = paths.path(directory) / name
    buffer = io.BytesIO()  # rendered in memory, then one write (local or bucket)
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths.write_atomic(path, buffer.getvalue())
    written.append(str(path))

  # 1. Per-class accuracy against training count.
  fig, ax = plt.subplots(figsize=(7, 4))
  lo, hi = max(counts.min() * 0.7, 0.5), counts.max() * 1.4
  many_min, few_max = metrics.thresholds_of(evaluation)
  for group, (a, b) in {"few": (lo, few_max), "medium": (few_max, many_min),
                        "many": (many_min, hi)}.items():
    if b > lo and a < hi:
      ax.axvspan(max(a, lo), min(b, hi), color=_GROUP_COLOURS[group], label=f"{group}-shot")
  per_class = np.array([np.nan if a is None else a for a in evaluation["per_class"]], np.float64)
  ax.scatter(counts, 100 * per_class, s=14, color="#1f4e79", zorder=3)
  ax.set(xscale="log", xlim=(lo, hi), ylim=(-2, 102), xlabel="training images of the class (log)",
         ylabel="test accuracy (%)", title=f"Per-class accuracy (top-1 {100 * evaluation['top1']:.2f}%)")
  ax.legend(loc="lower right", fontsize=8)
  save(fig, PLOTS[0])

  # 2. Per-expert accuracy by shot group.
  groups = [g for g in ("many", "medium", "few") if evaluation.get(g) is not None] + ["top1"]
  rows = [("ensemble", evaluation)] + [(f"expert {i}", e) for i, e in enumerate(evaluation.get("experts", []))]
  fig, ax = plt.subplots(figsize=(7, 4))
  width = 0.8 / len(rows)
  for k, (label, entry) in enumerate(rows):
    ax.bar(np.arange(len(groups)) + (k - (len(rows) - 1) / 2) * width,
           [100 * entry[g] for g in groups], width, label=label)
  ax.set_xticks(np.arange(len(groups)), [("all" if g == "top1" else g) for g in groups])
  ax.set(ylabel="test accuracy (%)", ylim=(0, 119), title="Accuracy by shot group, per expert")
  ax.legend(fontsize=8, ncol=len(rows))
  save(fig, PLOTS[1])

  # 3. Where the rarest classes' test images go (rows normalised, columns head -> tail).
  confusion = np.asarray(evaluation["confusion"], np.float64)
  order = np.argsort(-counts, kind="stable")
  rare = order[::-1][:min(10, len(counts))]
  rows_norm = confusion[rare][:, order] / np.maximum(confusion[rare].sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(rare) + 1.5))
  im = ax.imshow(100 * rows_norm, aspect="auto", cmap="viridis", vmin=0, vmax=100)
  shown = _names(names, len(counts))
  ax.set_yticks(np.arange(len(rare)), [f"{shown[c]} (n={counts[c]})" for c in rare], fontsize=7)
  ax.set(xlabel="predicted class, ranked by training count: head (0) to tail",
         title="Confusion of the rarest classes (% of each row)")
  fig.colorbar(im, ax=ax)
  save(fig, PLOTS[2])

  # 4. Reliability diagram.
  rel = evaluation["reliability"]
  edges = np.asarray(rel["bin_edges"])
  acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.bar(edges[:-1], np.nan_to_num(acc), width=np.diff(edges), align="edge", edgecolor="k",
         color="#5b9bd5", label="accuracy")
  ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
  ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
         title=f"Reliability of the ensemble (ECE {100 * evaluation['ece']:.2f}%)")
  ax.legend(loc="upper left", fontsize=8)
  save(fig, PLOTS[3])
  return written
