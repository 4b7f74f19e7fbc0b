"""Replicas: several independent runs of one config, trained together in one vmapped step.
This module reads and checks the ``config.replicas`` fields; ``train.replicas`` builds each
replica's loss and optimizer, ``report.replicas`` their tables and plots.

``config.replicas.seeds`` (empty: the single run of ``config.seed``) gives each replica
its seed, from which its initialisation, data order and augmentation stream derive
exactly as in a single run with that seed; ``config.replicas.tau`` optionally gives each
replica its own ``loss.tau`` (a tau sweep), ``config.replicas.lr`` its own ``optim.lr``
(the base rate of the configured schedule). The state is stacked on a leading replica axis
(``state.STACKED_AXES``) and the step is vmapped over it (``steps.ReplicaAxis``);
``config.replicas.shards`` splits that axis over groups of devices (the mesh's 'replica'
axis), each group splitting every batch of its replicas over its devices.

Reports: every replica's own, and their mean and standard deviation, with plots that carry
error bars and, for a tau sweep, accuracy against tau (``report.replicas``).
"""

from __future__ import annotations

import dataclasses

from lgla_jax import losses

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
