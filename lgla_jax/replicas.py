"""Replicas: several independent runs of one config, trained together in one vmapped step.

``config.replicas.seeds`` (empty: the single run of ``config.seed``) gives each replica
its seed, from which its initialisation, data order and augmentation stream derive
exactly as in a single run with that seed; ``config.replicas.tau`` optionally gives each
replica its own ``loss.tau`` (a tau sweep), ``config.replicas.lr`` its own ``optim.lr``
(the base rate of the configured schedule). The state is stacked on a leading replica axis
(``state.STACKED_AXES``) and the step is vmapped over it (``steps.ReplicaAxis``);
``config.replicas.shards`` splits that axis over groups of devices (the mesh's 'replica'
axis), each group splitting every batch of its replicas over its devices.

Reports: every replica's own, and their mean and standard deviation (``summary``), with
plots that carry error bars and, for a tau sweep, accuracy against tau (``write_plots``).
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np

from lgla_jax import long_tail, losses, metrics, optim

# How the step runs over the replicas (config.replicas.mode): vmap batches them into one
# program (the replicas fill an accelerator together; their convolutions become grouped
# ones); sequential runs them one after the other inside the step (lax.map: the memory of
# one replica's activations); unrolled puts each replica's own single-run program side by
# side in the step. Measured on the 2-core CPU (python -m lgla_jax.benchmark, Fashion-MNIST
# config, synthetic data, 3 replicas, images/s of all replicas): one run 76.3, unrolled
# 76.8, vmap 45.2 (XLA:CPU's grouped convolutions are slow); sequential is ~20x slower on
# CPU (convolutions inside a loop: jax-ml/jax#12868). auto: unrolled on CPU, vmap
# elsewhere (not yet measured on a GPU).
MODES = ("auto", "vmap", "sequential", "unrolled")

# The accuracy metrics the tables and the history show per replica.
METRICS = ("top1", "many", "medium", "few", "rarest3")


@dataclasses.dataclass(frozen=True)
class Replicas:
  """The replicas of a run: one seed, one ``loss.tau`` and one ``optim.lr`` each (empty
``lrs``: the config's for all), and how many device groups the replica axis is split over."""

  seeds: tuple[int, ...]
  taus: tuple[float, ...]
  shards: int = 1
  mode: str = "auto"
  lrs: tuple[float, ...] = ()

  @property
  def size(self) -> int:
    """The number of replicas R."""
    return len(self.seeds)

  @property
  def is_tau_sweep(self) -> bool:
    """Whether the replicas differ in ``loss.tau``."""
    return len(set(self.taus)) > 1

  @property
  def is_lr_sweep(self) -> bool:
    """Whether the replicas differ in ``optim.lr``."""
    return len(set(self.lrs)) > 1

  def label(self, k: int) -> str:
    """Replica ``k`` for tables and logs: its seed, and its tau / lr where they vary."""
    return (f"seed {self.seeds[k]}" + (f", tau {self.taus[k]:g}" if self.is_tau_sweep else "")
            + (f", lr {self.lrs[k]:g}" if self.is_lr_sweep else ""))


def of(config) -> Replicas | None:
  """The replicas a config asks for, or None for a single run (``replicas.seeds`` empty)."""
  r = config.replicas
  if not r.seeds:
    return None
  seeds = tuple(int(s) for s in r.seeds)
  taus = tuple(float(t) for t in r.tau) or (float(config.loss.tau),) * len(seeds)
  lrs = tuple(float(v) for v in r.get("lr", ())) or (float(config.optim.lr),) * len(seeds)
  return Replicas(seeds, taus, int(r.shards), r.mode, lrs)


def problems(config, num_devices: int | None) -> list[tuple[str, str]]:
  """``(field, problem)`` pairs of ``config.replicas``; empty when usable."""
  r, found = config.replicas, []
  seeds, taus, lrs = tuple(r.seeds), tuple(r.tau), tuple(r.get("lr", ()))
  if r.mode not in MODES:
    found.append(("replicas.mode", f"{r.mode!r} is not one of {MODES}"))
  elif r.mode == "unrolled" and r.shards != 1:
    found.append(("replicas.mode", "unrolled runs every replica on every device; with "
                  "replicas.shards > 1 use vmap"))
  if not seeds:
    if taus:
      found.append(("replicas.tau", f"{len(taus)} value(s) but replicas.seeds is empty: give "
                    f"one seed per tau, e.g. --config.replicas.seeds='{(0,) * len(taus)}'"))
    if lrs:
      found.append(("replicas.lr", f"{len(lrs)} value(s) but replicas.seeds is empty: give "
                    f"one seed per lr, e.g. --config.replicas.seeds='{(0,) * len(lrs)}'"))
    if r.shards != 1:
      found.append(("replicas.shards", "splits replicas: set replicas.seeds first"))
    return found
  if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
    found.append(("replicas.seeds", f"must be non-negative integers, got {seeds}"))
  if taus and len(taus) != len(seeds):
    found.append(("replicas.tau", f"needs one value per seed ({len(seeds)}), got {len(taus)}: "
                  f"{taus}; or leave it empty to use loss.tau for every replica"))
  if any(not isinstance(t, (int, float)) or t < 0 for t in taus):
    found.append(("replicas.tau", f"every tau must be >= 0, got {taus}"))
  if lrs and len(lrs) != len(seeds):
    found.append(("replicas.lr", f"needs one value per seed ({len(seeds)}), got {len(lrs)}: "
                  f"{lrs}; or leave it empty to use optim.lr for every replica"))
  if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 for v in lrs):
    found.append(("replicas.lr", f"every learning rate must be > 0, got {lrs}"))
  spec = losses.REGISTRY.get(config.loss.name)
  if taus and spec is not None and "tau" not in spec.fields:
    found.append(("replicas.tau", f"loss {config.loss.name!r} does not read tau: a sweep over "
                  f"it would train {len(seeds)} times the same loss; leave replicas.tau empty"))
  if not found:
    pairs = list(zip(seeds, taus or (config.loss.tau,) * len(seeds),
                     lrs or (config.optim.lr,) * len(seeds)))
    twins = sorted({p for p in pairs if pairs.count(p) > 1})
    if twins:
      found.append(("replicas.seeds", f"replicas {twins} (seed, tau, lr) appear more than once "
                    f"and would train identically; give each replica another seed, tau or lr"))
  if r.shards < 1 or len(seeds) % r.shards:
    found.append(("replicas.shards", f"must divide the {len(seeds)} replicas, got {r.shards}"))
  elif num_devices and num_devices % r.shards:
    found.append(("replicas.shards", f"must divide the {num_devices} devices, got {r.shards}"))
  return found


def _per_value(values: tuple, field: str, section, build):
  """``(built, index)``: ``build(copy of section with field = v)`` for each distinct value
  ``v`` of ``values`` (in first-seen order), and which one each replica uses."""
  distinct = sorted(set(values), key=values.index)
  built = []
  for value in distinct:
    changed = copy.deepcopy(section)
    changed[field] = value
    built.append(build(changed))
  return tuple(built), tuple(distinct.index(v) for v in values)


def loss_functions(config, reps: Replicas, class_counts, num_experts: int, scale: float):
  """``(losses, index)``: one loss function per distinct tau (``losses.make``) and which
  one each replica uses."""
  return _per_value(reps.taus, "tau", config.loss,
                    lambda c: losses.make(c, class_counts, num_experts, scale))


def optimizers(config, reps: Replicas, steps_per_epoch: int):
  """``(optimizers, index)``: ``optim.make_optimizer``'s ``(optimizer, per-epoch rates)``
  per distinct learning rate (as ``optim.lr``) and which one each replica uses."""
  return _per_value(reps.lrs, "lr", config.optim,
                    lambda c: optim.make_optimizer(c, config.num_epochs, steps_per_epoch))


def stacked(iterators):
  """Batches of several iterators (one per replica), stacked on a leading replica axis."""
  for batches in zip(*iterators):
    yield {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0] if k != "step"}


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

  os.makedirs(directory, exist_ok=True)
  counts, paths = np.asarray(class_counts), []
  ddof = 1 if len(reports) > 1 else 0
  per = lambda entries, key: np.array([[np.nan if x is None else x for x in e[key]] for e in entries])

  def save(fig, name):
    paths.append(os.path.join(directory, name))
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

  acc = 100 * per(reports, "per_class")  # [R, C]
  mean, std = _nan_mean_std(acc, ddof)
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.errorbar(counts, mean, yerr=std, fmt="o", ms=4, capsize=3, color="#1f4e79")
  for edge in (long_tail.FEW_SHOT_MAX, long_tail.MANY_SHOT_MIN):
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
