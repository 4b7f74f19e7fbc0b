"""Whether decoded images fit in this machine's memory, checked before decoding them: a data
set decoded into memory (tfds by name, small images of a folder or split files) would
otherwise be killed for memory after minutes of decoding, the work lost."""

from __future__ import annotations

from lgla_jax import errors
from lgla_jax.storage.paths import path

MEMINFO = "/proc/meminfo"
FRACTION = 0.8  # of the available memory: the run needs the rest (model, batches, XLA)


def available_bytes(meminfo: str = MEMINFO) -> int | None:
  """Memory available to new allocations (Linux ``MemAvailable``); ``None`` where unknown."""
  try:
    for line in path(meminfo).read_text().splitlines():
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    return None
  return None


def check_fits(what: str, num_images: int, image_size: int, channels: int = 3,
               available: int | None = None) -> None:
  """Refuse, before any decoding, ``num_images`` uint8 images of ``image_size`` squared that
  would take more than ``FRACTION`` of the available memory; says how much and what to do."""
  need = num_images * image_size * image_size * channels
  available = available_bytes() if available is None else available
  if available is None or need <= FRACTION * available:
    return
  raise errors.DataError(
      f"{what}: {num_images} images of {image_size}x{image_size} need {_size(need)} "
      f"in memory, more than {FRACTION:.0%} of the {_size(available)} available here: "
      f"lower config.dataset.image_size, choose fewer images (config.dataset.splits, "
      f"max_per_class), or use a machine with more memory")


def _size(num_bytes: int) -> str:
  """``num_bytes`` for a message: GiB, or MiB below one GiB."""
  if num_bytes >= 1 << 30:
    return f"{num_bytes / (1 << 30):.1f} GiB"
  return f"{num_bytes / (1 << 20):.1f} MiB"
