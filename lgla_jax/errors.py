"""Every error lgla-jax raises on purpose, under two bases that say whose move it is.

``UsageError``: the command line or the config asks for something that cannot run; the
user changes the command (exit status 2). ``RunError``: the run met a problem of its input,
its files or its machine (missing or corrupt data, a checkpoint that cannot be written, a
busy workdir, a diverging loss); the message says what to do (exit status 1). Entry points
catch these two names and print the message as one line; anything else is a bug and keeps
its traceback.

Each part of the package raises the subclass named for it below. The subclasses also derive
from the builtin error a caller would expect (``ValueError``, ``FileNotFoundError``,
``OSError``), so ``except ValueError`` keeps working around library calls.
"""

from __future__ import annotations

import contextlib
import sys

EXIT_RUN, EXIT_USAGE = 1, 2


class UsageError(Exception):
  """The command or config cannot run as given (exit status 2)."""


class RunError(Exception):
  """The run met a problem of its input, files or machine (exit status 1)."""


class ConfigError(UsageError, ValueError):
  """A config field is unknown or inconsistent; the message names it."""


class FlagError(UsageError, ValueError):
  """A command-line flag has a value that cannot be used; the message names the flag."""


class NotFound(RunError, FileNotFoundError):
  """A file or folder the run needs does not exist; the message says how to get it."""


class DataError(RunError, ValueError):
  """Data that exists but cannot be used (corrupt, truncated, inconsistent with the config)."""


class DownloadError(RunError, OSError):
  """A file could not be downloaded or failed its checksum."""


class CheckpointError(RunError, ValueError):
  """A checkpoint that cannot be written, or restored into this run."""


class WorkdirError(RunError, RuntimeError):
  """The workdir is in use by another run, or not writable."""


class TrainingDiverged(RunError, RuntimeError):
  """The loss or the gradient norm stopped being finite."""


class ExportError(RunError, OSError):
  """``export --out`` names a place the file cannot be written to, or the write failed."""


class WeightsError(RunError, ValueError):
  """A weights file that does not fit the configured network."""


class WeightsFileError(WeightsError):
  """A weights file (``.npz``, ``.safetensors``, a folder given as one) that cannot be read:
  malformed, or stating more than ``interop.torch_file.Limits`` allow; the message names it."""


class TorchFileError(RunError, ValueError):
  """A ``torch.save`` file that cannot (or must not) be read."""


def fail(field: str, problem: str):
  """Raise ``ConfigError`` for ``config.<field>``."""
  raise ConfigError(f"config.{field}: {problem}")


@contextlib.contextmanager
def one_line_exit(usage: tuple = (), run: tuple = ()):
  """An entry point's body: ``UsageError`` (and the ``usage`` types) end it with
  ``error: <message>`` on stderr and exit status 2, ``RunError`` (and ``run``) with status 1;
  anything else is a bug and keeps its traceback."""
  try:
    yield
  except (UsageError, *usage) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(EXIT_USAGE)
  except (RunError, *run) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(EXIT_RUN)
