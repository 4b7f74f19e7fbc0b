"""One device mesh with a 'data' axis: batches are split over it, the state is replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


# XLA:CPU otherwise fuses the elementwise BatchNorm/ReLU/residual chain of a whole stage
# into every consumer (notably the transposes feeding the kernel-gradient convolutions) and
# recomputes it there; compiling elementwise ops into YNNPACK fusions materialises them
# once. Measured here: 1.6x faster CIFAR ResNet-32 x3 training step; not used off CPU.
CPU_FAST_ELEMENTWISE = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_ELTWISE"}


def compiler_options(mesh: Mesh, fast_elementwise: bool = True) -> dict | None:
  """Per-backend XLA options for the jitted steps (``jax.jit(compiler_options=...)``)."""
  if fast_elementwise and mesh.devices.flat[0].platform == "cpu":
    return dict(CPU_FAST_ELEMENTWISE)
  return None


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
