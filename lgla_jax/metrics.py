"""Accuracy tables from per-class counts (the official test.py definitions)."""

from __future__ import annotations

import numpy as np

from lgla_jax import long_tail


def accuracy_report(correct_C, seen_C, class_counts, expert_correct_ExC=None) -> dict:
  """top-1, per-class and many/medium/few (mean per-class accuracy within each group),
  the mean accuracy of the 3 rarest classes, and per-expert tables if given."""
  correct = np.asarray(correct_C, np.float64)
  seen = np.asarray(seen_C, np.float64)
  if np.any(seen == 0):
    missing = np.where(seen == 0)[0][:10].tolist()
    raise ValueError(f"classes {missing} have no test image; accuracy per class is undefined")
  per_class = correct / seen
  groups = long_tail.shot_groups(class_counts)
  rarest = np.argsort(np.asarray(class_counts), kind="stable")[:3]
  report = {
      "top1": float(correct.sum() / seen.sum()),
      "per_class": per_class.tolist(),
      "rarest3": float(per_class[rarest].mean()),
      "num_images": int(seen.sum()),
  }
  for name, mask in groups.items():
    report[name] = float(per_class[mask].mean()) if mask.any() else None
  if expert_correct_ExC is not None:
    experts = []
    for row in np.asarray(expert_correct_ExC, np.float64):
      acc = row / seen
      entry = {"top1": float(row.sum() / seen.sum())}
      for name, mask in groups.items():
        entry[name] = float(acc[mask].mean()) if mask.any() else None
      experts.append(entry)
    report["experts"] = experts
  return report


def format_table(report: dict) -> str:
  fmt = lambda v: "  -  " if v is None else f"{100 * v:5.2f}"
  lines = ["            top-1   many  medium  few   rarest-3",
           f"ensemble    {fmt(report['top1'])}  {fmt(report['many'])}  {fmt(report['medium'])}  "
           f"{fmt(report['few'])}  {fmt(report['rarest3'])}"]
  for i, e in enumerate(report.get("experts", [])):
    lines.append(f"expert {i}    {fmt(e['top1'])}  {fmt(e['many'])}  {fmt(e['medium'])}  {fmt(e['few'])}")
  return "\n".join(lines)
