"""A replica run's reports: every replica's own, their mean and standard deviation
(``summary``), console tables and plots with error bars (and accuracy against tau for a tau
sweep)."""

from __future__ import annotations

import io

import numpy as np

from lgla_jax.config.replicas import Replicas
from lgla_jax.report import metrics
from lgla_jax.storage import paths as storage_paths

# The accuracy metrics the tables and the history show per replica.
METRICS = ("top1", "many", "medium", "few", "rarest3")


def brief(report: dict) -> dict:
  """The metrics of ``METRICS`` (what the history keeps per evaluation)."""
  return {k: report[k] for k in METRICS}


def _aggregate(values: list, ddof: int):
  """Mean and standard deviation of matching values across replicas, recursively over
  dicts and lists; None where a value is missing or not a number in some replica."""
  first = values[0]
  if isinstance(first, dict):
    keys = [k for k in first if k != "confusion" and all(isinstance(v, dict) and k in v for v in values)]
    pairs = {k: _aggregate([v[k] for v in values], ddof) for k in keys}
    return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
  if isinstance(first, list):
    if not all(isinstance(v, list) and len(v) == len(first) for v in values):
      return None, None
    pairs = [_aggregate([v[i] for v in values], ddof) for i in range(len(first))]
    return [p[0] for p in pairs], [p[1] for p in pairs]
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None for v in values):
    x = np.asarray(values, np.float64)
    return float(x.mean()), float(x.std(ddof=ddof)) if len(x) > ddof else 0.0
  return None, None


def summary(reports: list[dict], reps: Replicas) -> dict:
  """The report keys of a replica run: ``replicas`` (seed, tau, lr and final report of each),
  ``replica_mean`` and ``replica_std`` (sample standard deviation, ddof=1) of every metric
  of the final report."""
  mean, std = _aggregate(reports, ddof=1)
  strip = lambda d: {k: v for k, v in d.items() if k != "confusion"}
  lrs = reps.lrs or (None,) * reps.size
  return {"replicas": [{"seed": s, "tau": t, "lr": lr, "final": strip(r)}
                       for s, t, lr, r in zip(reps.seeds, reps.taus, lrs, reports)],
          "replica_mean": mean, "replica_std": std}


def format_table(reports: list[dict], reps: Replicas) -> str:
  """Each replica's accuracy and ECE, then their mean +- standard deviation."""
  fmt = lambda v: "  -  " if v is None else f"{100 * v:5.2f}"
  width = max(len(reps.label(k)) for k in range(reps.size))
  lines = [f"{'replica':{width}}   top-1   many  medium  few   rarest-3  ECE"]
  for k, r in enumerate(reports):
    lines.append(f"{reps.label(k):{width}}   " + "  ".join(fmt(r[m]) for m in METRICS + ("ece",)))
  if len(reports) > 1:
    mean, std = _aggregate(reports, ddof=1)
    pm = lambda m: "  -  " if mean[m] is None else f"{100 * mean[m]:.2f} +- {100 * std[m]:.2f}"
    lines.append(f"mean +- std over {len(reports)} replicas: " +
                 ", ".join(f"{m} {pm(m)}" for m in METRICS + ("ece",)))
  return "\n".join(lines)


PLOTS = ("replica_per_class_accuracy.png", "replica_expert_accuracy.png", "tau_sweep.png")


def write_plots(reports: list[dict], reps: Replicas, class_counts, directory: str) -> list[str]:
  """Per-class accuracy and per-expert accuracy by shot group as mean +- std over the
  replicas (error bars); for a tau sweep, accuracy per shot group against tau (mean +- std
  over the replicas of each tau). Returns the paths written."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  storage_paths.path(directory).mkdir(parents=True, exist_ok=True)
  counts, paths = np.asarray(class_counts), []
  ddof = 1 if len(reports) > 1 else 0
  per = lambda entries, key: np.array([[np.nan if x is None else x for x in e[key]] for e in entries])

  def save(fig, name):
    paths.append(str(storage_paths.path(directory) / name))
    buffer = io.BytesIO()  # rendered in memory, then one write (local or bucket)
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    storage_paths.write_atomic(paths[-1], buffer.getvalue())

  acc = 100 * per(reports, "per_class")  # [R, C]
  mean, std = _nan_mean_std(acc, ddof)
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.errorbar(counts, mean, yerr=std, fmt="o", ms=4, capsize=3, color="#1f4e79")
  for edge in metrics.thresholds_of(reports[0])[::-1]:
    if counts.min() < edge < counts.max():
      ax.axvline(edge, color="grey", ls=":", lw=1)
  ax.set(xscale="log", ylim=(-2, 102), xlabel="training images of the class (log)",
         ylabel="test accuracy (%)",
         title=f"Per-class accuracy, mean +- std over {len(reports)} replicas")
  save(fig, PLOTS[0])

  groups = [g for g in ("many", "medium", "few") if reports[0].get(g) is not None] + ["top1"]
  rows = [("ensemble", reports)] + [(f"expert {i}", [r["experts"][i] for r in reports])
                                    for i in range(len(reports[0].get("experts", [])))]
  fig, ax = plt.subplots(figsize=(7, 4))
  width = 0.8 / len(rows)
  for j, (label, entries) in enumerate(rows):
    values = 100 * np.array([[e[g] for g in groups] for e in entries], np.float64)
    ax.bar(np.arange(len(groups)) + (j - (len(rows) - 1) / 2) * width, values.mean(0), width,
           yerr=values.std(0, ddof=ddof), capsize=3, label=label)
  ax.set_xticks(np.arange(len(groups)), [("all" if g == "top1" else g) for g in groups])
  ax.set(ylabel="test accuracy (%)", ylim=(0, 119),
         title=f"Accuracy by shot group, per expert ({len(reports)} replicas)")
  ax.legend(fontsize=8, ncol=len(rows))
  save(fig, PLOTS[1])

  if reps.is_tau_sweep:
    taus = sorted(set(reps.taus))
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in groups:
      at = [100 * np.array([r[g] for r, t in zip(reports, reps.taus) if t == tau]) for tau in taus]
      ax.errorbar(taus, [a.mean() for a in at],
                  yerr=[a.std(ddof=1) if len(a) > 1 else 0.0 for a in at], marker="o", capsize=3,
                  label="all" if g == "top1" else g)
    ax.set(xlabel="tau", ylabel="test accuracy (%)", title="Accuracy per shot group against tau")
    ax.legend(fontsize=8)
    save(fig, PLOTS[2])
  return paths


def _nan_mean_std(x, ddof):
  """Per-column mean and standard deviation ignoring missing values (a class without test
  images: no point; std 0 where too few values)."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(x, 0), np.nan_to_num(np.nanstd(x, 0, ddof=ddof))


def record_evaluation(reports: list[dict], epoch: int, reps: Replicas | None,
                      history: list) -> dict:
  """Label the reports with their epoch and append the history entry: the first replica's
  metrics, and every replica's under ``replicas`` in a replica run. Returns the first."""
  for r in reports:
    r["epoch"] = epoch
  history.append({"epoch": epoch, **brief(reports[0])})
  if reps:
    history[-1]["replicas"] = [brief(r) for r in reports]
  return reports[0]


def console_table(reports: list[dict], reps: Replicas | None) -> str:
  """The console table of an evaluation: the report's, or the replicas' side by side."""
  if reps is None:
    return metrics.format_table(reports[0])
  return f"{metrics.format_table(reports[0])}\n({reps.label(0)}; all replicas:)\n" \
         f"{format_table(reports, reps)}"
