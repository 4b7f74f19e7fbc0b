"""The device mesh. A single run: one 'data' axis; batches are split over it, the state is
replicated. A replica run (``replicas``): a 'replica' axis next to it, over which the
stacked per-replica state and each replica's batches are split."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

REPLICA = "replica"  # mesh axis of the stacked replicas (a replica run only)

# XLA:CPU otherwise fuses the elementwise BatchNorm/ReLU/residual chain of a whole stage
# into every consumer (notably the transposes feeding the kernel-gradient convolutions) and
# recomputes it there; compiling elementwise ops into YNNPACK fusions materialises them
# once. Measured here: 1.6x faster CIFAR ResNet-32 x3 training step; not used off CPU.
CPU_FAST_ELEMENTWISE = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_ELTWISE"}


def on_cpu(mesh: Mesh) -> bool:
  """Whether the mesh's devices are CPUs (XLA:CPU needs some programs written otherwise)."""
  return mesh.devices.flat[0].platform == "cpu"


def compiler_options(mesh: Mesh, fast_elementwise: bool = True) -> dict | None:
  """Per-backend XLA options for the jitted steps (``jax.jit(compiler_options=...)``)."""
  if fast_elementwise and on_cpu(mesh):
    if has_replicas(mesh) and mesh.shape["data"] > 1:
      # XLA:CPU (jax 0.10.2) then gives the stacked activations a [R, B] transposed
      # layout that its YNN fusions reject at run time ("unsupported layout in YNN fusion")
      return None
    return dict(CPU_FAST_ELEMENTWISE)
  return None


def init_compiler_options(mesh: Mesh) -> dict | None:
  """XLA options for the state's initialisation: a program that runs once, mostly random
  numbers (one unrolled threefry per variable). XLA:CPU's LLVM optimisation made its
  compile 3.7x slower (Fashion-MNIST ResNet-32 x3: 7.3 s -> 2.0 s without it); the values
  stay within 3 ulp of the optimised program's. Not measured off CPU: None there."""
  if on_cpu(mesh):
    return {"xla_backend_optimization_level": 0}
  return None


def make_mesh(devices=None, replica_shards: int | None = None) -> Mesh:
  """A 1-D 'data' mesh, or with ``replica_shards`` a ('replica', 'data') mesh of that many
  device groups. Device ``j * replica_shards + i`` sits at (replica i, data j): each
  process's devices hold a contiguous share of the data axis for every replica group, so
  a process feeds the same share of every replica's batch as of a single run's."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  if replica_shards is None:
    return Mesh(devices, ("data",))
  if devices.size % replica_shards:
    raise ValueError(f"{devices.size} devices cannot be split into {replica_shards} replica groups")
  grid = devices.reshape(devices.size // replica_shards, replica_shards).T
  return Mesh(grid, (REPLICA, "data"))


def has_replicas(mesh: Mesh) -> bool:
  """Whether the mesh carries stacked replicas (a leading replica axis on the state)."""
  return REPLICA in mesh.axis_names


def data_size(mesh: Mesh) -> int:
  """Devices along the 'data' axis: what a (per-replica) batch is split over."""
  return mesh.shape["data"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """One batch shared by every replica (evaluation), or a single run's batch."""
  return NamedSharding(mesh, P("data"))


def train_batch_sharding(mesh: Mesh, chunked: bool = False) -> NamedSharding:
  """A training batch: ``[B]`` (single run) or ``[R, B]`` (replicas), after a leading
  step axis ``[K]`` when ``chunked``."""
  spec = (None,) * chunked + ((REPLICA,) if has_replicas(mesh) else ()) + ("data",)
  return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same value on every device of ``mesh``."""
  return NamedSharding(mesh, P())

