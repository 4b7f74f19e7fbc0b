"""Data sources found by name: ``config.dataset.source`` selects one of ``SOURCES``.

A source is a function of the ``config.dataset`` section registered with ``register``. An
in-memory source returns the balanced ``(train, test)`` ``ArrayData`` and the official
long-tail subset rule is applied after it (``data.sources.load``); a source of data that is
long-tailed already (split files) returns the whole ``DataSplits``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

# The config.dataset fields of the official long-tail subset rule, read by every source
# whose training set is made long-tailed here.
SUBSET_FIELDS = ("imbalance_factor", "imbalance_kind", "max_per_class", "subset_seed")


@dataclasses.dataclass(frozen=True)
class Source:
  """How one source reads a data set, and which ``config.dataset`` fields it reads."""

  read: Callable  # dataset config -> (train, test) ArrayData, or DataSplits (long_tail_subset False)
  fields: tuple[str, ...]  # besides those every source reads (name, mean, std, image_size, ...)
  long_tail_subset: bool = True  # the training set is made long-tailed after reading
  in_memory: bool = True  # images as uint8 arrays (False: files decoded by the pipeline)
  class_names: Callable | None = None  # dataset config -> names from the data's own files, or None (the catalog's)
  train_images: Callable | None = None  # dataset config -> the training images before decoding (FileImages or uint8 arrays), measured by config.from_data


SOURCES: dict[str, Source] = {}


def register(name: str, *, fields=(), long_tail_subset: bool = True, in_memory: bool = True,
             class_names: Callable | None = None, train_images: Callable | None = None):
  """Decorator: make ``read(dataset_config)`` the source ``name``; ``fields``: the
  ``config.dataset`` fields it reads (the subset rule's are added when it applies);
  ``class_names``: reads the names from the data's own files (None there: the catalog's);
  ``train_images``: the training images undecoded, for the settings measured from the data
  (``config.from_data``)."""

  def add(read):
    SOURCES[name] = Source(read, tuple(fields) + (SUBSET_FIELDS if long_tail_subset else ()),
                           long_tail_subset, in_memory, class_names, train_images)
    return read

  return add
