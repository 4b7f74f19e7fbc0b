"""What a long-tailed data set looks like before training: its classes, their training counts,
the imbalance factor and the many/medium/few split, as text lines, a bar plot and a
``classes.txt`` (the class names, index order) that predictions and reports read back."""

from __future__ import annotations

import io

import numpy as np

from lgla_jax import long_tail
from lgla_jax.storage.paths import path

PLOT = "class_counts.png"
CLASSES_FILE = "classes.txt"


def summarize(class_counts, names, many_shot_min: int = long_tail.MANY_SHOT_MIN,
              few_shot_max: int = long_tail.FEW_SHOT_MAX) -> dict:
  """Counts per class with names, the imbalance factor (largest / smallest count) and the
  classes of each shot group (many > ``many_shot_min``, few < ``few_shot_max``)."""
  counts = np.asarray(class_counts, np.int64)
  names = tuple(str(n) for n in names)
  if len(names) != len(counts):
    raise ValueError(f"{len(names)} class names for {len(counts)} class counts")
  groups = long_tail.shot_groups(counts, many_shot_min, few_shot_max)
  smallest = int(counts.min()) if counts.size else 0
  return {
      "num_classes": int(len(counts)),
      "train_images": int(counts.sum()),
      "counts": {n: int(c) for n, c in zip(names, counts)},
      "names": list(names),
      "imbalance_factor": (float(counts.max() / smallest) if smallest > 0 else float("inf")),
      "thresholds": {"many_shot_min": int(many_shot_min), "few_shot_max": int(few_shot_max)},
      "groups": {g: [names[i] for i in np.flatnonzero(m)] for g, m in groups.items()},
  }


def lines(summary: dict, show: int = 10) -> list[str]:
  """The summary as text: one line of totals, one per shot group, then the ``show`` largest
  and smallest classes (every class when there are at most ``2 * show``)."""
  counts = summary["counts"]
  th = summary["thresholds"]
  out = [f"data: {summary['num_classes']} classes, {summary['train_images']} training images, "
         f"imbalance factor {summary['imbalance_factor']:.1f} (largest / smallest class)"]
  bounds = {"many": f"> {th['many_shot_min']}", "medium": f"{th['few_shot_max']}..{th['many_shot_min']}",
            "few": f"< {th['few_shot_max']}"}
  for group in ("many", "medium", "few"):
    out.append(f"  {group}-shot ({bounds[group]} images): {len(summary['groups'][group])} class(es)")
  ranked = sorted(counts.items(), key=lambda kv: -kv[1])
  shown = ranked if len(ranked) <= 2 * show else ranked[:show] + [("...", None)] + ranked[-show:]
  for name, n in shown:
    out.append("  ..." if n is None else f"  {n:>8d}  {name}")
  return out


def write_plot(summary: dict, directory) -> str:
  """A bar plot of the class counts, largest first, log y, the shot thresholds drawn; its path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ranked = sorted(summary["counts"].items(), key=lambda kv: -kv[1])
  counts = np.array([max(n, 0) for _, n in ranked], np.float64)
  fig, ax = plt.subplots(figsize=(max(6, min(0.12 * len(ranked), 16)), 4))
  ax.bar(np.arange(len(ranked)), np.maximum(counts, 0.5), width=0.9, color="#1f4e79")
  th = summary["thresholds"]
  for value, label in ((th["many_shot_min"], "many-shot above"), (th["few_shot_max"], "few-shot below")):
    ax.axhline(value, color="#c00000", lw=0.8, ls="--", label=f"{label} {value}")
  if len(ranked) <= 40:  # names readable only for a few classes
    ax.set_xticks(np.arange(len(ranked)), [n for n, _ in ranked], rotation=90, fontsize=7)
  ax.set(yscale="log", xlabel="class (largest first)", ylabel="training images (log)",
         title=f"Class counts (imbalance factor {summary['imbalance_factor']:.1f})")
  ax.legend(fontsize=8)
  target = path(directory) / PLOT
  target.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  target.write_bytes(buf.getvalue())  # (epath: a local folder or a bucket alike)
  return str(target)


def write_class_names(names, directory) -> str:
  """``classes.txt`` in ``directory``: one class name a line, index order; its path."""
  names = [str(n) for n in names]
  bad = [n for n in names if "\n" in n or "\r" in n]
  if bad:
    raise ValueError(f"class name {bad[0]!r} holds a line break; classes.txt has one name a line")
  target = path(directory) / CLASSES_FILE
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_text("".join(f"{n}\n" for n in names))
  return str(target)


def read_class_names(directory, num_classes: int | None = None) -> tuple[str, ...] | None:
  """The names ``write_class_names`` stored in ``directory`` (None when there is no file);
  a file with another number of names than ``num_classes`` is an error, not a guess."""
  source = path(directory) / CLASSES_FILE
  if not source.exists():
    return None
  names = tuple(source.read_text().splitlines())
  if num_classes is not None and len(names) != num_classes:
    raise ValueError(f"{source}: {len(names)} class names for a model of {num_classes} classes; "
                     f"delete the file or write one name a line")
  return names
