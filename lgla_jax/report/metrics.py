"""Evaluation counts (summed on device over the test set) and the reports made from them.

Accuracy follows the official test.py: per-class accuracy from the confusion matrix,
many / medium / few as the mean per-class accuracy within each shot group. Calibration is
the expected calibration error of the ensemble prediction (softmax of the mean expert
logits) over 15 equal-width confidence bins.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lgla_jax import long_tail

ECE_BINS = 15


def eval_counts(output_BxC, logits_ExBxC, labels_B, mask_B) -> dict:
  """Per-batch sums (jittable): confusion matrix, per-expert hits, calibration bins."""
  num_classes = output_BxC.shape[-1]
  valid = mask_B.astype(jnp.float32)
  onehot = jax.nn.one_hot(labels_B, num_classes) * valid[:, None]
  pred = jnp.argmax(output_BxC, -1)
  expert_hit = (jnp.argmax(logits_ExBxC, -1) == labels_B[None]).astype(jnp.float32)
  probs = jax.nn.softmax(output_BxC.astype(jnp.float32), axis=-1)
  confidence = probs.max(-1)
  hit = (pred == labels_B).astype(jnp.float32) * valid
  bins = jnp.clip((confidence * ECE_BINS).astype(jnp.int32), 0, ECE_BINS - 1)
  in_bin = jax.nn.one_hot(bins, ECE_BINS) * valid[:, None]
  return {
      "confusion": onehot.T @ jax.nn.one_hot(pred, num_classes),  # [true, predicted]
      "expert_correct": expert_hit @ onehot,  # [E, C]
      "bin_count": in_bin.sum(0),
      "bin_confidence": (in_bin * confidence[:, None]).sum(0),
      "bin_correct": (in_bin * hit[:, None]).sum(0),
  }


def expected_calibration_error(bin_count, bin_confidence, bin_correct) -> float:
  """sum_b (n_b / n) |accuracy_b - confidence_b|."""
  n = np.asarray(bin_count, np.float64)
  gap = np.abs(np.asarray(bin_correct, np.float64) - np.asarray(bin_confidence, np.float64))
  return float(gap.sum() / n.sum())


def report_from_counts(counts: dict, class_counts, many_shot_min: int = long_tail.MANY_SHOT_MIN,
                       few_shot_max: int = long_tail.FEW_SHOT_MAX) -> dict:
  """An evaluation report (``accuracy_report`` plus ECE and reliability bins) from summed
  counts; the shot thresholds as ``accuracy_report``'s."""
  confusion = np.asarray(counts["confusion"], np.float64)
  report = accuracy_report(np.diag(confusion), confusion.sum(1), class_counts,
                           counts["expert_correct"], many_shot_min, few_shot_max)
  n = np.asarray(counts["bin_count"], np.float64)
  report["ece"] = expected_calibration_error(n, counts["bin_confidence"], counts["bin_correct"])
  report["reliability"] = {
      "bin_edges": np.linspace(0, 1, ECE_BINS + 1).tolist(),
      "count": n.astype(int).tolist(),
      "accuracy": [float(c / k) if k else None for c, k in zip(counts["bin_correct"], n)],
      "confidence": [float(c / k) if k else None for c, k in zip(counts["bin_confidence"], n)],
  }
  report["confusion"] = confusion.astype(int).tolist()
  return report


def accuracy_report(correct_C, seen_C, class_counts, expert_correct_ExC=None,
                    many_shot_min: int = long_tail.MANY_SHOT_MIN,
                    few_shot_max: int = long_tail.FEW_SHOT_MAX) -> dict:
  """top-1, per-class and many/medium/few (mean per-class accuracy within each group: more
  than ``many_shot_min`` training images, fewer than ``few_shot_max``, the rest; the
  official 100 / 20 by default, ``config.eval``), the mean accuracy of the 3 rarest
  classes, and per-expert tables if given. Classes without a test image have no accuracy
  (``None``) and are left out of the means. The thresholds are recorded in the report
  (``shot_thresholds``), for its plots."""
  correct = np.asarray(correct_C, np.float64)
  seen = np.asarray(seen_C, np.float64)
  has = seen > 0
  if not has.any():
    raise ValueError("the test set is empty: no accuracy to report")
  per_class = np.where(has, correct / np.maximum(seen, 1), np.nan)
  groups = long_tail.shot_groups(class_counts, many_shot_min, few_shot_max)
  group_mean = lambda acc, mask: float(np.mean(acc[mask & has])) if (mask & has).any() else None
  order = np.argsort(np.asarray(class_counts), kind="stable")
  rarest = order[has[order]][:3]
  report = {
      "top1": float(correct.sum() / seen.sum()),
      "per_class": [None if np.isnan(a) else float(a) for a in per_class],
      "rarest3": float(per_class[rarest].mean()),
      "num_images": int(seen.sum()),
      "classes_without_test_images": int((~has).sum()),
      "shot_thresholds": shot_thresholds(many_shot_min, few_shot_max),
  }
  for name, mask in groups.items():
    report[name] = group_mean(per_class, mask)
  if expert_correct_ExC is not None:
    experts = []
    for row in np.asarray(expert_correct_ExC, np.float64):
      acc = np.where(has, row / np.maximum(seen, 1), np.nan)
      entry = {"top1": float(row.sum() / seen.sum())}
      for name, mask in groups.items():
        entry[name] = group_mean(acc, mask)
      experts.append(entry)
    report["experts"] = experts
  return report


def shot_thresholds(many_shot_min: int = long_tail.MANY_SHOT_MIN,
                    few_shot_max: int = long_tail.FEW_SHOT_MAX) -> dict:
  """The thresholds as a report records them."""
  return {"many_shot_min": int(many_shot_min), "few_shot_max": int(few_shot_max)}


def thresholds_of(report: dict) -> tuple[int, int]:
  """``(many_shot_min, few_shot_max)`` of a report (the official ones for an older report)."""
  th = report.get("shot_thresholds") or shot_thresholds()
  return th["many_shot_min"], th["few_shot_max"]


def format_table(report: dict) -> str:
  """A report as the console's table: ensemble and experts by shot group, and the ECE."""
  fmt = lambda v: "  -  " if v is None else f"{100 * v:5.2f}"
  lines = ["            top-1   many  medium  few   rarest-3",
           f"ensemble    {fmt(report['top1'])}  {fmt(report['many'])}  {fmt(report['medium'])}  "
           f"{fmt(report['few'])}  {fmt(report['rarest3'])}"]
  for i, e in enumerate(report.get("experts", [])):
    lines.append(f"expert {i}    {fmt(e['top1'])}  {fmt(e['many'])}  {fmt(e['medium'])}  {fmt(e['few'])}")
  if "ece" in report:
    lines.append(f"ECE (15 bins) of the ensemble: {100 * report['ece']:.2f}%")
  return "\n".join(lines)
