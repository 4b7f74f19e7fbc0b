"""Read the tensors of a PyTorch ``torch.save`` file (``.pth``) without torch.

Pretrained weights (torchvision's ResNet-152 for Places-LT, say) and official trainer
checkpoints come as ``.pth`` files; this reads their ``state_dict`` into numpy arrays so
that no torch installation is needed.
Both of torch's container formats are understood:

* the zip format (torch >= 1.6): ``<name>/data.pkl`` holds the pickled object, every
  tensor storage is a separate member ``<name>/data/<key>``;
* the legacy format (older files, torchvision's 2017 ImageNet weights among them): three
  small pickles (magic number, protocol version, system info), the pickled object, the
  pickled list of storage keys, then each storage as an int64 element count and its raw
  bytes.

The unpickler only builds plain containers and tensors: any other class in the file is
refused with an error (loading a ``.pth`` with ``pickle`` can otherwise run arbitrary code),
except what an official trainer checkpoint holds besides tensors: its ``ConfigParser`` and
``pathlib`` paths become ``Inert`` records (no code of theirs runs) and numpy scalars
numbers.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

from lgla_jax.errors import TorchFileError  # noqa: F401 - raised here, named by callers

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
  def __init__(self, name: str):
    if name == "BFloat16Storage":
      import ml_dtypes  # a dependency of jax
      self.dtype = np.dtype(ml_dtypes.bfloat16)
    elif name in _STORAGE_DTYPES:
      self.dtype = np.dtype(_STORAGE_DTYPES[name])
    else:
      raise TorchFileError(f"unsupported tensor storage type torch.{name}")


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
  """A tensor as numpy: ``size`` elements with ``stride`` (in elements) from ``offset``."""
  itemsize = storage.dtype.itemsize
  size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
  if any(n == 0 for n in size):
    return np.empty(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if offset < 0 or min(stride, default=0) < 0 or last >= len(storage):
    raise TorchFileError(f"a tensor of size {size} reaches past its storage of {len(storage)} "
                         f"elements: the file is corrupt")
  if not size:
    return storage[offset:offset + 1].reshape(()).copy()
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride),
      writeable=False)
  return np.ascontiguousarray(view)


class _PendingTensor:
  """Legacy files: a tensor whose storage bytes come after the pickled object."""

  def __init__(self, key, *args):
    self.key, self.args = key, args


def _rebuild_any(storage, *args):
  if isinstance(storage, str):  # legacy: ``storage`` is the key of a storage read later
    return _PendingTensor(storage, *args)
  return _rebuild_tensor(storage, *args)


def _rebuild_parameter(data, *_ignored):
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_any,
    ("torch._utils", "_rebuild_tensor"): _rebuild_any,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


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


def _numpy_scalar(dtype, data=None):
  return np.frombuffer(data, dtype)[0] if data is not None else dtype.type()


# What besides tensors an official trainer checkpoint (``base_trainer._save_checkpoint``)
# pickles: its ConfigParser with pathlib paths (kept inert) and numpy scalar metrics.
_INERT = {("parse_config", "ConfigParser")} | {
    (module, name) for module in ("pathlib", "pathlib._local")  # _local: Python >= 3.13
    for name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")}
def _latin1_bytes(text, encoding):
  """How protocol 2 (torch.save's) pickles bytes: ``_codecs.encode(text, 'latin1')``."""
  if encoding not in ("latin1", "latin-1"):
    raise TorchFileError(f"unexpected byte encoding {encoding!r} in the file")
  return text.encode("latin1")


_NUMPY = {("_codecs", "encode"): _latin1_bytes,
          ("numpy.core.multiarray", "scalar"): _numpy_scalar,
          ("numpy._core.multiarray", "scalar"): _numpy_scalar,
          ("numpy", "dtype"): np.dtype}


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, load_storage, trainer_checkpoint=False):
    super().__init__(file)
    self._load_storage = load_storage
    self._trainer_checkpoint = trainer_checkpoint

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name.endswith("Storage"):
      return _StorageType(name)
    if self._trainer_checkpoint and (module, name) in _NUMPY:
      return _NUMPY[(module, name)]
    if self._trainer_checkpoint and (module, name) in _INERT:
      return type(name, (Inert,), {"qualname": f"{module}.{name}"})
    raise TorchFileError(f"the file contains a {module}.{name}, which is not a tensor or a "
                         f"plain container: only state_dict-like files are read")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchFileError(f"unexpected persistent object {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if len(pid) > 5 and pid[5] is not None:
      raise TorchFileError("storage views (files from torch < 0.4 with shared storages) are not supported")
    return self._load_storage(storage_type, key, numel)


def _read_zip(path: str, trainer_checkpoint: bool):
  with zipfile.ZipFile(path) as z:
    pickles = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise TorchFileError(f"{path}: a zip file without exactly one data.pkl (not a torch.save file)")
    prefix = pickles[0][: -len("data.pkl")]
    order = "little"
    if prefix + "byteorder" in z.namelist():
      order = z.read(prefix + "byteorder").decode().strip()

    def load_storage(storage_type, key, numel):
      raw = z.read(f"{prefix}data/{key}")
      dtype = storage_type.dtype.newbyteorder("<" if order == "little" else ">")
      return np.frombuffer(raw, dtype, count=numel).astype(storage_type.dtype.newbyteorder("="))

    return _Unpickler(io.BytesIO(z.read(pickles[0])), load_storage, trainer_checkpoint).load()


def _read_legacy(path: str, trainer_checkpoint: bool):
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any failure means: not a torch file
      raise TorchFileError(f"{path} is neither a zip nor a legacy torch.save file: {e}") from e
    if magic != _LEGACY_MAGIC:
      raise TorchFileError(f"{path} is not a torch.save file (wrong magic number)")
    pickle.load(f)  # protocol version
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
      raise TorchFileError(f"{path} was written on a big-endian machine: not supported")
    types = {}

    def load_storage(storage_type, key, numel):
      types[key] = storage_type
      return key  # resolved once the storages that follow the object are read

    obj = _Unpickler(f, load_storage, trainer_checkpoint).load()
    keys = pickle.load(f)
    data = {}
    for key in keys:
      numel = int(np.frombuffer(_read_exactly(f, 8, path, key), "<i8")[0])
      dtype = types[str(key)].dtype
      data[str(key)] = np.frombuffer(_read_exactly(f, numel * dtype.itemsize, path, key), dtype)
  return _resolve(obj, data)


def _read_exactly(f, n: int, path: str, key) -> bytes:
  raw = f.read(n)
  if len(raw) != n:
    raise TorchFileError(f"{path} is truncated (storage {key})")
  return raw


def _resolve(obj, data):
  """Legacy files: tensors were built on storage keys; rebuild them on the storages."""
  if isinstance(obj, _PendingTensor):
    return _rebuild_tensor(data[obj.key], *obj.args)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, data)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, data) for v in obj)
  return obj


def load(path: str, trainer_checkpoint: bool = False):
  """The object saved in a ``.pth`` file, with every tensor as a numpy array.
  ``trainer_checkpoint``: also accept what an official trainer checkpoint pickles next to
  its tensors (its config object, kept ``Inert``; numpy scalars)."""
  if zipfile.is_zipfile(path):
    return _read_zip(path, trainer_checkpoint)
  return _read_legacy(path, trainer_checkpoint)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The arrays of a saved ``state_dict``, or of an official trainer checkpoint's
  ``state_dict`` (``read_checkpoint``)."""
  obj = load(path, trainer_checkpoint=True)
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise TorchFileError(f"{path} holds a {type(obj).__name__}, not a state_dict")
  return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


def read_checkpoint(path: str) -> dict:
  """An official trainer checkpoint (``model_best.pth``, ``checkpoint-epochN.pth``):
  ``state_dict`` (name -> array), ``epoch``, ``monitor_best`` and ``arch`` (None where the
  file has none: a plain ``state_dict`` file)."""
  obj = load(path, trainer_checkpoint=True)
  if not isinstance(obj, dict):
    raise TorchFileError(f"{path} holds a {type(obj).__name__}, not a checkpoint")
  is_checkpoint = isinstance(obj.get("state_dict"), dict)
  state = obj["state_dict"] if is_checkpoint else obj
  meta = {k: obj.get(k) if is_checkpoint else None for k in ("epoch", "monitor_best", "arch")}
  if meta["monitor_best"] is not None:
    meta["monitor_best"] = float(np.asarray(meta["monitor_best"]).reshape(()))
  return {"state_dict": {k: v for k, v in state.items() if isinstance(v, np.ndarray)}, **meta}
