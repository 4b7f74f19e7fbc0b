"""Read the tensors of a PyTorch ``torch.save`` file (``.pth``) without torch.

Pretrained weights (torchvision's ResNet-152) and official trainer checkpoints come as
``.pth`` files; this reads their ``state_dict`` into numpy arrays. Both formats:

* the zip format (torch >= 1.6): ``<name>/data.pkl`` holds the pickled object, every
  tensor storage is a separate member ``<name>/data/<key>``;
* the legacy format (older files, torchvision's 2017 ImageNet weights among them): three
  small pickles (magic number, protocol version, system info), the pickled object, the
  pickled list of storage keys, then each storage as an int64 element count and its raw
  bytes.

Files come from strangers: every pickle in them (the zip's ``data.pkl``, all five of the
legacy format) goes through ``safe_pickle``, which builds containers and tensors only, and
what an official trainer checkpoint holds besides (its ``ConfigParser`` and ``pathlib``
paths as ``Inert`` records, numpy scalars); sizes the file states are checked (against
what it holds and ``Limits``) before anything of that size is read; zip members are read in
bounded chunks, CRC checked; a view must fit its storage and use each element once. Every
failure is a ``TorchFileError`` naming the file.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np

from lgla_jax.errors import TorchFileError  # noqa: F401 - raised here, named by callers
from lgla_jax.interop import safe_pickle
from lgla_jax.interop.limits import Budget, Limits  # noqa: F401 - callers size reads with them
from lgla_jax.storage.paths import open_binary, path as as_path

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
MAX_PICKLE_BYTES = 64 << 20  # one pickle of the file (ResNet-152's data.pkl: ~100 kB)
MAX_MEMBERS = 65_536  # zip members (one per storage: a ResNet-152 checkpoint has ~2,000)
_CHUNK = 1 << 20


class _StorageType:
  def __init__(self, name: str):
    if name == "BFloat16Storage":
      import ml_dtypes  # a dependency of jax
      self.dtype = np.dtype(ml_dtypes.bfloat16)
    else:
      self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _ints(values) -> tuple[int, ...]:
  if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) for v in values):
    raise TorchFileError(f"a tensor with size or stride {values!r:.80}: the file is corrupt")
  return tuple(values)


def _contiguous(size, stride) -> bool:
  expected = 1
  for n, s in zip(reversed(size), reversed(stride)):
    if n != 1 and s != expected:
      return False
    expected *= n
  return True


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
  """A tensor as numpy: ``size`` elements with ``stride`` (in elements) from ``offset``; a
  view that reads past its storage or any element twice is refused."""
  if not isinstance(storage, np.ndarray) or not isinstance(offset, int):
    raise TorchFileError("a tensor without a storage: the file is corrupt")
  size, stride = _ints(size), _ints(stride)
  if min(size, default=0) < 0:
    raise TorchFileError(f"a tensor of negative size {size}: the file is corrupt")
  if len(size) != len(stride):
    raise TorchFileError(f"a tensor of size {size} and strides {stride}: the file is corrupt")
  if 0 in size:
    return np.empty(size, storage.dtype)
  reach = 0  # offset of the last element: each stride must step over all smaller ones
  for n, s in sorted(((n, s) for n, s in zip(size, stride) if n > 1), key=lambda p: p[1]):
    if s <= reach:
      raise TorchFileError(f"a tensor of size {size} with strides {stride} uses storage "
                           f"elements more than once (a stride-0 or overlapping view): refused")
    reach += (n - 1) * s
  if offset < 0 or offset + reach >= len(storage):
    raise TorchFileError(f"a tensor of size {size} reaches past its storage of {len(storage)} "
                         f"elements: the file is corrupt")
  if _contiguous(size, stride):
    return storage[offset:offset + math.prod(size)].reshape(size)
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=tuple(s * storage.dtype.itemsize for s in stride),
      writeable=False)
  return np.ascontiguousarray(view)


class _PendingTensor:
  """A tensor whose storage is resolved once the whole object is read."""

  def __init__(self, key, *args):
    self.key, self.args = key, args


def _rebuild_any(storage, *args):
  return _PendingTensor(storage, *args)  # ``storage``: the key ``_storage_pid`` returned


def _rebuild_parameter(data, *_ignored):
  return data


class Inert:
  """A foreign object of an official trainer checkpoint, kept as data: its class name and
  the arguments and state it was pickled with. Nothing of the class runs."""

  qualname = "?"

  def __new__(cls, *args):
    obj = super().__new__(cls)
    obj.args, obj.state = args, None
    return obj

  def __init__(self, *args):
    pass

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"<{self.qualname} (not loaded)>"


# What besides tensors an official trainer checkpoint (``base_trainer._save_checkpoint``)
# pickles: its ConfigParser with pathlib paths (kept inert) and numpy scalar metrics.
_INERT = {("parse_config", "ConfigParser")} | {
    (module, name) for module in ("pathlib", "pathlib._local")  # _local: Python >= 3.13
    for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")}
_TENSORS = {**safe_pickle.BASE,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_any,
            ("torch._utils", "_rebuild_tensor"): _rebuild_any,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", name): _StorageType(name)
               for name in (*_STORAGE_DTYPES, "BFloat16Storage")}}
_TRAINER = {**_TENSORS, **safe_pickle.NUMPY_SCALARS,
            **{(m, n): type(n, (Inert,), {"qualname": f"{m}.{n}"}) for m, n in _INERT}}


def _storage_pid(pid, record):
  """A persistent id ``("storage", type, key, location, numel[, view])``: ``record(type,
  key, numel)``, and the key stands for the storage until ``_resolve``."""
  if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
          and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
    raise TorchFileError(f"an unexpected persistent object {pid!r:.80}")
  if len(pid) > 5 and pid[5] is not None:
    raise TorchFileError("storage views (files from torch < 0.4 with shared storages) are "
                         "not supported")
  key = str(pid[2])
  record(pid[1], key, pid[4])
  return key


def member_count(path) -> int | None:
  """How many members a zip file's end record states (None: no end record); ``path``: a
  local path, a bucket URL or an open binary file (which is left open)."""
  if hasattr(path, "seek"):
    end = zipfile._EndRecData(path)  # (the end record: zipfile's own reader, stable since 2.x)
    return end[zipfile._ECD_ENTRIES_TOTAL] if end else None
  with open_binary(path) as f:
    end = zipfile._EndRecData(f)  # (the end record: zipfile's own reader, stable since 2.x)
  return end[zipfile._ECD_ENTRIES_TOTAL] if end else None


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
  """The bytes of a zip member (uint8), read in bounded chunks: never more than the size
  the central directory states (allocated once, checked by the caller), CRC checked."""
  size = info.file_size
  buf = np.empty(size, np.uint8)
  view, got = memoryview(buf), 0
  with z.open(info) as member:
    while got < size:
      n = member.readinto(view[got:got + _CHUNK])
      if not n:
        raise TorchFileError(f"member {info.filename} ends after {got:,} of its {size:,} bytes")
      got += n
    if member.read(1):
      raise TorchFileError(f"member {info.filename} holds more than its stated {size:,} bytes")
  return buf


def _read_zip(path, allowed, budget: Budget):
  count = member_count(path)
  if count is not None and count > MAX_MEMBERS:
    raise TorchFileError(f"a zip of {count:,} members (a torch.save file has one per storage; "
                         f"more than {MAX_MEMBERS:,} are refused)")
  with zipfile.ZipFile(path) as z:
    members = {i.filename: i for i in z.infolist()}
    pickles = [n for n in members if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise TorchFileError("a zip file without exactly one data.pkl (not a torch.save file)")
    prefix = pickles[0][: -len("data.pkl")]
    order = "little"
    if prefix + "byteorder" in members:
      if members[prefix + "byteorder"].file_size > 16:
        raise TorchFileError("an over-long byteorder member")
      order = read_member(z, members[prefix + "byteorder"]).tobytes().decode("ascii").strip()
      if order not in ("little", "big"):
        raise TorchFileError(f"an unknown byte order {order!r:.20}")
    storages = {}

    def record(storage_type, key, numel):
      if key in storages:
        if storages[key].dtype != storage_type.dtype or len(storages[key]) != numel:
          raise TorchFileError(f"storage {key} is given two types or sizes")
        return
      budget.take(f"storage {key}", numel * storage_type.dtype.itemsize)
      info = members.get(f"{prefix}data/{key}")
      if info is None:
        raise TorchFileError(f"a tensor's storage, member {prefix}data/{key}, is missing")
      if info.file_size != numel * storage_type.dtype.itemsize:
        raise TorchFileError(f"member {info.filename} holds {info.file_size:,} bytes, its "
                             f"tensors state {numel:,} elements of {storage_type.dtype}")
      dtype = storage_type.dtype.newbyteorder("<" if order == "little" else ">")
      storages[key] = read_member(z, info).view(dtype).astype(storage_type.dtype, copy=False)

    info = members[pickles[0]]
    if info.file_size > MAX_PICKLE_BYTES:
      raise TorchFileError(f"its data.pkl states {info.file_size:,} bytes (more than "
                           f"{MAX_PICKLE_BYTES:,} are refused)")
    data = read_member(z, info).tobytes()
    obj = safe_pickle.restricted_load(io.BytesIO(data), allowed, max_bytes=len(data),
                           persistent_load=lambda pid: _storage_pid(pid, record))
  return _resolve(obj, storages)


def size_of(f) -> int:
  """The size of the open binary file ``f`` (a local file or a bucket object), its position
  kept."""
  here = f.tell()
  size = f.seek(0, io.SEEK_END)
  f.seek(here)
  return size


def _read_legacy(f, allowed, budget: Budget):
  """The legacy format from the open binary file ``f`` (a local file or a bucket object)."""
  size = size_of(f)
  header = lambda: safe_pickle.restricted_load(f, {}, max_bytes=1 << 16)
  try:
    magic = header()
  except safe_pickle.PickleRefused as e:
    raise TorchFileError(f"neither a zip nor a legacy torch.save file ({e})") from None
  if not isinstance(magic, int) or magic != _LEGACY_MAGIC:
    raise TorchFileError("not a torch.save file (wrong magic number)")
  protocol, sys_info = header(), header()
  if not isinstance(protocol, int) or not isinstance(sys_info, dict):
    raise TorchFileError("a legacy torch.save file with a malformed header")
  if not sys_info.get("little_endian", True):
    raise TorchFileError("written on a big-endian machine: not supported")
  declared = {}

  def record(storage_type, key, numel):
    declared[key] = (storage_type, numel)

  obj = safe_pickle.restricted_load(f, allowed, max_bytes=MAX_PICKLE_BYTES,
                         persistent_load=lambda pid: _storage_pid(pid, record))
  keys = safe_pickle.restricted_load(f, {}, max_bytes=MAX_PICKLE_BYTES)
  if (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
      or len(set(keys)) != len(keys)):
    raise TorchFileError("a legacy torch.save file with a malformed storage list")
  data = {}
  for key in keys:
    if key not in declared:
      raise TorchFileError(f"storage {key} is not used by any tensor: the file is corrupt")
    storage_type, numel = declared[key]
    raw = f.read(8)
    if len(raw) != 8 or int.from_bytes(raw, "little", signed=True) != numel:
      raise TorchFileError(f"is truncated or corrupt (storage {key} does not have the "
                           f"{numel:,} elements its tensors state)")
    budget.take(f"storage {key}", numel * storage_type.dtype.itemsize)
    if f.tell() + numel * storage_type.dtype.itemsize > size:
      raise TorchFileError(f"is truncated (storage {key})")
    data[key] = np.empty(numel, storage_type.dtype)
    if f.readinto(memoryview(data[key].view(np.uint8))) != data[key].nbytes:
      raise TorchFileError(f"is truncated (storage {key})")
  return _resolve(obj, data)


def _resolve(obj, data):
  """Tensors were built on storage keys; rebuild them on the storages."""
  if isinstance(obj, _PendingTensor):
    if not isinstance(obj.key, str) or obj.key not in data:
      raise TorchFileError(f"a tensor refers to storage {obj.key!r:.40}, which the file lacks")
    return _rebuild_tensor(data[obj.key], *obj.args)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, data)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, data) for v in obj)
  return obj


def load(path: str, trainer_checkpoint: bool = False, limits: Limits | None = None):
  """The object saved in a ``.pth`` file, with every tensor as a numpy array.
  ``trainer_checkpoint``: also accept what an official trainer checkpoint pickles next to
  its tensors (its config object, kept ``Inert``; numpy scalars). ``limits``: how much the
  file may make this process hold (default ``Limits.default()``). Any failure is a
  ``TorchFileError`` naming ``path``."""
  allowed = _TRAINER if trainer_checkpoint else _TENSORS
  try:
    budget = Budget(limits or Limits.default())
    if as_path(path).is_dir():
      raise TorchFileError("is a folder, not a weights file")
    with open_binary(path) as f:  # (a bucket object seeks as a local file: open_binary)
      if zipfile.is_zipfile(f):
        f.seek(0)
        return _read_zip(f, allowed, budget)
      f.seek(0)
      return _read_legacy(f, allowed, budget)
  except (TorchFileError, safe_pickle.PickleRefused) as e:
    raise TorchFileError(f"{path}: {e}") from None
  except Exception as e:  # noqa: BLE001 - whatever a malformed file provokes, it is one line
    reason = str(e).splitlines()[0][:200] if str(e) else ""
    raise TorchFileError(f"{path} is not a readable torch.save file "
                         f"({type(e).__name__}: {reason})") from None


def _tensors(state: dict, path: str) -> dict[str, np.ndarray]:
  arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  if not all(isinstance(k, str) for k in arrays):
    raise TorchFileError(f"{path}: a tensor is named by something other than text")
  return arrays


def read_state_dict(path: str, limits: Limits | None = None) -> dict[str, np.ndarray]:
  """The arrays of a saved ``state_dict``, or of an official trainer checkpoint's
  ``state_dict`` (``read_checkpoint``)."""
  obj = load(path, trainer_checkpoint=True, limits=limits)
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise TorchFileError(f"{path} holds a {type(obj).__name__}, not a state_dict")
  return _tensors(obj, path)


def _number(value, kind):
  if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
    value = value.reshape(()).item()  # (a metric saved as a 0-d tensor)
  if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
    return kind(value)
  return None  # (anything else a file holds there is not reported)


def read_checkpoint(path: str, limits: Limits | None = None) -> dict:
  """An official trainer checkpoint (``model_best.pth``, ``checkpoint-epochN.pth``):
  ``state_dict`` (name -> array), ``epoch``, ``monitor_best`` and ``arch`` (None where the
  file has none, or something other than a number / text there)."""
  obj = load(path, trainer_checkpoint=True, limits=limits)
  if not isinstance(obj, dict):
    raise TorchFileError(f"{path} holds a {type(obj).__name__}, not a checkpoint")
  is_checkpoint = isinstance(obj.get("state_dict"), dict)
  state = obj["state_dict"] if is_checkpoint else obj
  get = lambda k: obj.get(k) if is_checkpoint else None
  arch = get("arch")
  return {"state_dict": _tensors(state, path), "epoch": _number(get("epoch"), int),
          "monitor_best": _number(get("monitor_best"), float),
          "arch": arch if isinstance(arch, str) else None}
