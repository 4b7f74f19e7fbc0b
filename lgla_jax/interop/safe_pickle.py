"""The one way lgla-jax reads a pickle: nothing in the file runs, and its size is bounded.

Pickles come from strangers (a ``.pth`` from a model page, a CIFAR archive from a mirror).
``pickle.load`` would call whatever the file names, so every pickle the project reads goes
through ``load``:

1. ``scan`` walks the opcodes first without building anything: only the opcodes that
   ``torch.save`` and numpy's pickles use are accepted, counted arguments must fit in the
   bytes that are there (no allocation is sized by a number the file states), memo indices
   must be sequential (the C unpickler sizes its memo by the largest index) and the number
   of opcodes is capped, so the objects built stay in proportion to the file;
2. the restricted unpickler then builds the object: a global is looked up in the caller's
   allow-list, and anything else is refused, naming it (``posix.system``, ...).

numpy values are built by this module, not by numpy's own ``__setstate__``: ``NUMPY``
allows plain numeric dtypes, scalars and arrays (CIFAR's batches), checked against their
byte counts; object arrays are refused.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import re
from collections.abc import Callable, Mapping

import numpy as np

MAX_OPS = 250_000  # opcodes per pickle: a ResNet-152 trainer checkpoint's data.pkl has ~60k
MAX_LINE = 1 << 16  # the longest text argument (a global's name, a decimal number)


class PickleRefused(ValueError):
  """A pickle that asks for something this reader does not build, or is malformed."""


# Opcodes of the pickles we read (torch.save: protocol 2; numpy / CIFAR: protocols 2-4).
# Left out: sets (not needed; large per opcode), out-of-band buffers, the copyreg extension
# registry, INST/OBJ, NEWOBJ_EX, DUP, PERSID (torch uses BINPERSID) and LONG4. BYTEARRAY8
# (numpy's protocol 5) is allocated at its stated size before it is read: ``scan`` has
# checked that those bytes are there.
_OPCODES = {op.code.encode("latin-1"): op for op in pickletools.opcodes if op.name in {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE", "NEWTRUE",
    "NEWFALSE", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT",
    "BINFLOAT", "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1",
    "TUPLE2", "TUPLE3", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "POP", "MARK",
    "POP_MARK", "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "PROTO", "STOP", "FRAME",
    "BINPERSID"}}
_COUNTED = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
            pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _take(f, n: int, end: int) -> bytes:
  if f.tell() + n > end:
    raise PickleRefused("the pickle is truncated (an argument runs past its end)")
  return f.read(n)


def _line(f, end: int) -> bytes:
  line = f.readline(min(MAX_LINE, end - f.tell()))
  if not line.endswith(b"\n"):
    raise PickleRefused("the pickle is truncated or has an over-long text argument")
  return line


def scan(f, end: int, max_ops: int = MAX_OPS) -> None:
  """Walk one pickle from ``f``'s position to its STOP without building anything (``f``
  seekable, ``end`` the offset it may not pass); raise ``PickleRefused`` on an opcode
  outside the accepted set, an argument that does not fit, a memo index out of order or
  more than ``max_ops`` opcodes. Large arguments are skipped, not read."""
  puts = 0
  for _ in range(max_ops):
    code = _take(f, 1, end)
    op = _OPCODES.get(code)
    if op is None:
      name = pickletools.code2op.get(code.decode("latin-1"))
      raise PickleRefused(f"the pickle uses opcode {name.name if name else code!r}, which "
                          f"no file this reader accepts needs")
    if op.name == "STOP":
      return
    arg = op.arg
    if arg is None:
      puts += op.name == "MEMOIZE"
    elif arg.n >= 0:
      raw = _take(f, arg.n, end)
      if op.name == "FRAME" and f.tell() + int.from_bytes(raw, "little") > end:
        raise PickleRefused("the pickle states a frame longer than the file")
      if op.name in _PUTS:
        if int.from_bytes(raw, "little") > puts:
          raise PickleRefused("the pickle's memo indices are out of order")
        puts += 1
    elif arg.n == pickletools.UP_TO_NEWLINE:
      text = _line(f, end)
      if arg.name == "stringnl_noescape_pair":  # GLOBAL: module and name
        _line(f, end)
      elif op.name == "PUT":
        if not text.strip().isdigit() or int(text) > puts:
          raise PickleRefused("the pickle's memo indices are out of order")
        puts += 1
    else:
      width, signed = _COUNTED[arg.n]
      n = int.from_bytes(_take(f, width, end), "little", signed=signed)
      if n < 0 or f.tell() + n > end:
        raise PickleRefused(f"the pickle states a {n}-byte argument that is not there")
      f.seek(n, io.SEEK_CUR)
  raise PickleRefused(f"the pickle has more than {max_ops} opcodes")


class _Unpickler(pickle.Unpickler):
  """Builds only what ``allowed`` maps ``(module, name)`` to; everything else is refused."""

  def __init__(self, file, allowed: Mapping, persistent_load: Callable | None, encoding: str):
    super().__init__(file, encoding=encoding)
    self._allowed, self._persistent = allowed, persistent_load

  def find_class(self, module, name):
    """The allowed stand-in for ``module.name``; refuse any other."""
    found = self._allowed.get((module, name))
    if found is None:
      raise PickleRefused(f"it contains a {module}.{name}, which is not a tensor or a plain "
                          f"container: refused (nothing of it ran)")
    return found

  def persistent_load(self, pid):
    """Storages (torch.save); refused where the caller has none."""
    if self._persistent is None:
      raise PickleRefused("it refers to persistent objects, which this file should not hold")
    try:
      return self._persistent(pid)
    except Exception as e:  # noqa: BLE001 - the caller's own error, passed on as it is
      raise _CallerError(e) from None


class _CallerError(Exception):
  """Carries an error of the caller's ``persistent_load`` through the unpickler."""


def restricted_load(f, allowed: Mapping, *, persistent_load: Callable | None = None,
                    max_bytes: int, max_ops: int = MAX_OPS, encoding: str = "ASCII"):
  """The object of the pickle at ``f``'s position (a seekable binary file), built with the
  globals of ``allowed`` (``(module, name) -> callable``; ``NUMPY`` for numpy values) and
  nothing else, after ``scan`` accepted at most ``max_bytes`` of it. ``f`` is left after
  the pickle's STOP. Raises ``PickleRefused``."""
  start = f.tell()
  f.seek(0, io.SEEK_END)
  end = min(f.tell(), start + max_bytes)
  f.seek(start)
  scan(f, end, max_ops)
  stop = f.tell()
  f.seek(start)
  try:
    obj = _Unpickler(f, allowed, persistent_load, encoding).load()
  except _CallerError as e:
    raise e.args[0] from None
  except PickleRefused:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
          IndexError, OverflowError, UnicodeDecodeError, RecursionError, MemoryError) as e:
    raise PickleRefused(f"the pickle is malformed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
  if f.tell() != stop:  # (the unpickler read what scan walked, and nothing more)
    raise PickleRefused("the pickle did not end where its opcodes end")
  return _arrays(obj) if any(v is _reconstruct for v in allowed.values()) else obj


def protocol2_bytes(text, encoding):
  """How protocol 2 pickles bytes: ``_codecs.encode(text, 'latin1')``."""
  if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
    raise PickleRefused(f"unexpected byte encoding {encoding!r}")
  return text.encode("latin-1")


_SIMPLE_DTYPE = re.compile(r"[<>|=]?(?:[iuf][1248]|b1|[US][1-9][0-9]{0,5})\Z")  # numbers, text


def _text(value) -> str:
  return value.decode("latin-1") if isinstance(value, bytes) else value


class _Dtype:
  """``numpy.dtype(spec)`` of a plain number or fixed-size text (object, structured and
  sub-array dtypes are refused); the pickle's state sets the byte order."""

  def __init__(self, spec, align=False, copy=False):
    spec = _text(spec)
    if not isinstance(spec, str) or not _SIMPLE_DTYPE.match(spec):
      raise PickleRefused(f"it holds numpy dtype {spec!r}: only plain numbers are read")
    self.spec, self.order = spec, "="

  def __setstate__(self, state):
    order = _text(state[1]) if isinstance(state, tuple) and len(state) > 1 else None
    if order not in ("<", ">", "|", "="):
      raise PickleRefused("it holds a numpy dtype with an unreadable state")
    self.order = order

  def numpy(self) -> np.dtype:
    """The numpy dtype."""
    dtype = np.dtype(self.spec)
    return dtype.newbyteorder(self.order) if self.order in "<>" else dtype


def _as_bytes(data) -> bytes:
  data = data.encode("latin-1") if isinstance(data, str) else data  # (Python 2 pickles)
  if not isinstance(data, (bytes, bytearray)):
    raise PickleRefused(f"numpy data given as a {type(data).__name__}, not bytes")
  return data


def _scalar(dtype, data=None):
  if not isinstance(dtype, _Dtype):
    raise PickleRefused("a numpy scalar without a plain dtype")
  dtype = dtype.numpy()
  if data is None:
    return dtype.type()
  data = _as_bytes(data)
  if len(data) != dtype.itemsize:
    raise PickleRefused("a numpy scalar with the wrong number of bytes")
  return np.frombuffer(data, dtype)[0]


class _ArrayState:
  """An array as numpy pickles it (``_reconstruct`` then its state): built by ``_arrays``."""

  state = None

  def __setstate__(self, state):
    self.state = state


class _NdarrayClass:
  """Stands for ``numpy.ndarray`` (``_reconstruct``'s first argument)."""


def _reconstruct(cls, shape=None, typecode=None):
  if cls is not _NdarrayClass:
    raise PickleRefused("numpy's _reconstruct of something other than an ndarray")
  return _ArrayState()


def _array(state) -> np.ndarray:
  if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _Dtype)):
    raise PickleRefused("a numpy array with an unreadable state (object arrays are refused)")
  _, shape, dtype, fortran, data = state
  return _checked_array(data, dtype, shape, fortran)


def _frombuffer(data, dtype, shape, order):
  """numpy's protocol-5 array: ``_frombuffer(bytes, dtype, shape, order)``."""
  if not isinstance(dtype, _Dtype) or order not in ("C", "F"):
    raise PickleRefused("a numpy array with an unreadable dtype or order")
  return _checked_array(data, dtype, shape, order == "F")


def _checked_array(data, dtype, shape, fortran) -> np.ndarray:
  if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
    raise PickleRefused(f"a numpy array of shape {shape!r}")
  dtype, data = dtype.numpy(), _as_bytes(data)
  if math.prod(shape) * dtype.itemsize != len(data):
    raise PickleRefused(f"a numpy array of shape {shape} with {len(data)} bytes of data")
  return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _arrays(obj):
  """``obj`` with every ``_ArrayState`` replaced by its array (checked against its bytes)."""
  if isinstance(obj, _ArrayState):
    return _array(obj.state)
  if isinstance(obj, dict):
    return type(obj)((k, _arrays(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_arrays(v) for v in obj)
  return obj


BASE = {("collections", "OrderedDict"): collections.OrderedDict}
# numpy values: plain dtypes and scalars; with arrays (``numpy.core``: numpy < 2's name).
NUMPY_SCALARS = {("numpy", "dtype"): _Dtype, ("_codecs", "encode"): protocol2_bytes,
                 **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")}}
NUMPY = {**NUMPY_SCALARS, ("numpy", "ndarray"): _NdarrayClass,
         **{(f"numpy.{core}.{module}", name): fn for core in ("core", "_core")
            for module, name, fn in (("multiarray", "_reconstruct", _reconstruct),
                                     ("numeric", "_frombuffer", _frombuffer))}}
