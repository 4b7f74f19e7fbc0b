"""How much one weights file may make this process hold: ``Limits`` (per tensor and in all,
from the configured model or the defaults; ``LGLA_MAX_TENSOR_MB`` / ``LGLA_MAX_WEIGHTS_MB``
override them) and the ``Budget`` a reader takes from while it reads."""

from __future__ import annotations

import dataclasses
import math
import os

from lgla_jax.errors import TorchFileError

_ENV_TENSOR, _ENV_TOTAL = "LGLA_MAX_TENSOR_MB", "LGLA_MAX_WEIGHTS_MB"


def _env_mb(name: str) -> int | None:
  value = os.environ.get(name)
  if not value:
    return None
  try:
    return int(float(value) * (1 << 20))
  except ValueError:
    raise TorchFileError(f"{name}={value!r} is not a number of MB") from None


@dataclasses.dataclass(frozen=True)
class Limits:
  """How much one weights file may make this process hold: ``tensor_bytes`` for any one
  storage (zip member, tensor), ``total_bytes`` for all of them; ``source`` says where the
  numbers come from (for the error message)."""

  tensor_bytes: int
  total_bytes: int
  source: str = "the defaults"

  @classmethod
  def default(cls) -> "Limits":
    """Without a model to compare with: 2 GiB per tensor, 8 GiB in all (or the MB given
    by ``LGLA_MAX_TENSOR_MB`` / ``LGLA_MAX_WEIGHTS_MB``)."""
    return cls._overridden(cls(2 << 30, 8 << 30, "the defaults"))

  @classmethod
  def for_shapes(cls, shapes) -> "Limits":
    """For a model with tensors of ``shapes``: a storage may hold its largest tensor at 8
    bytes per element (float64), the file three times all of them at 8 bytes (a trainer
    checkpoint holds the optimizer's buffers too), plus 1 MiB and 16 MiB of slack."""
    counts = [math.prod(tuple(s)) for s in shapes]
    return cls._overridden(cls(8 * max(counts, default=0) + (1 << 20),
                               24 * sum(counts) + (16 << 20), "the configured model's tensors"))

  @classmethod
  def _overridden(cls, limits: "Limits") -> "Limits":
    tensor, total = _env_mb(_ENV_TENSOR), _env_mb(_ENV_TOTAL)
    if tensor is None and total is None:
      return limits
    return cls(tensor or limits.tensor_bytes, total or limits.total_bytes,
               f"{limits.source} and {_ENV_TENSOR}/{_ENV_TOTAL}")


class Budget:
  """What one read of a file has taken so far, against its ``Limits``: ``take`` raises
  ``TorchFileError`` (without the file's name: the reader adds it) past either limit."""

  def __init__(self, limits: Limits):
    self.limits, self.used = limits, 0

  def take(self, what: str, nbytes: int) -> None:
    """Count ``nbytes`` that ``what`` is about to make this process hold."""
    lim = self.limits
    if nbytes < 0:
      raise TorchFileError(f"{what} states a negative size: the file is corrupt")
    if nbytes > lim.tensor_bytes:
      raise TorchFileError(f"{what} states {nbytes:,} bytes, more than one tensor may hold "
                           f"({lim.tensor_bytes:,} bytes, from {lim.source}; raise "
                           f"{_ENV_TENSOR} if the file is right)")
    self.used += nbytes
    if self.used > lim.total_bytes:
      raise TorchFileError(f"its tensors state more than {lim.total_bytes:,} bytes in all "
                           f"(from {lim.source}; raise {_ENV_TOTAL} if the file is right)")
