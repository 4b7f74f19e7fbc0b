"""An official trainer checkpoint written as ``torch.save`` writes one, without torch.

``base_trainer._save_checkpoint`` saves ``{arch, epoch, state_dict, optimizer,
monitor_best, config, criterion}``, where ``config`` is the trainer's ``ConfigParser``
(with ``pathlib`` paths) and ``monitor_best`` a numpy scalar. This writes that structure
in torch's zip format (``archive/data.pkl`` pickled with persistent storage ids,
``archive/data/<key>`` raw little-endian storages, ``byteorder``, ``version``), so that
tests can read an official checkpoint where torch is not installed. The tensor reader
itself is checked against files written by real torch (tests/data/torch_files).
"""

import collections
import contextlib
import io
import pathlib
import pickle
import sys
import types
import zipfile

import numpy as np

_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
             np.dtype(np.float64): "DoubleStorage"}


@contextlib.contextmanager
def _fake_modules(*names):
  """Stand-ins for modules whose globals the pickle names (torch, parse_config)."""
  saved = {n: sys.modules.get(n) for n in names}
  made = {n: types.ModuleType(n) for n in names}
  sys.modules.update(made)
  try:
    yield made
  finally:
    for n, m in saved.items():
      if m is None:
        sys.modules.pop(n, None)
      else:
        sys.modules[n] = m


def write(path, state_dict, *, epoch=200, monitor_best=0.4321, arch="ResNet32Model"):
  """Write an official-trainer-style checkpoint holding ``state_dict`` (name -> array)."""
  with _fake_modules("torch", "torch._utils", "parse_config") as mods:
    storage_types = {}
    for dtype, name in _STORAGES.items():
      storage_types[dtype] = type(name, (), {"__module__": "torch", "__qualname__": name})
      setattr(mods["torch"], name, storage_types[dtype])

    def _rebuild_tensor_v2(*args):
      raise AssertionError("only pickled here")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    mods["torch._utils"]._rebuild_tensor_v2 = _rebuild_tensor_v2
    config_parser = type("ConfigParser", (), {"__module__": "parse_config",
                                              "__qualname__": "ConfigParser"})
    mods["parse_config"].ConfigParser = config_parser

    class Storage:  # pickled as a persistent id; its bytes go to archive/data/<key>
      def __init__(self, array, key):
        self.array, self.key = array, key

    class Tensor:
      def __init__(self, array, key):
        self.array, self.key = np.ascontiguousarray(array), key

      def __reduce__(self):
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        return (_rebuild_tensor_v2, (Storage(self.array, self.key), 0, self.array.shape,
                                     stride, False, collections.OrderedDict()))

    tensors = []

    class Pickler(pickle.Pickler):
      def persistent_id(self, obj):
        if isinstance(obj, Storage):
          return ("storage", storage_types[obj.array.dtype], obj.key, "cpu", obj.array.size)
        return None

    def tensor(array):
      t = Tensor(np.asarray(array), str(len(tensors)))
      tensors.append(t)
      return t

    config = config_parser()
    config.__dict__.update({"_config": collections.OrderedDict(name="Imbalance_CIFAR100_LT_LGLA",
                                                               n_gpu=1),
                            "resume": None, "_save_dir": pathlib.PosixPath("saved/models/x"),
                            "_log_dir": pathlib.PosixPath("saved/log/x")})
    obj = {"arch": arch, "epoch": epoch,
           "state_dict": collections.OrderedDict((k, tensor(v)) for k, v in state_dict.items()),
           "optimizer": {"state": {0: {"momentum_buffer": tensor(np.zeros(3, np.float32))}},
                         "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0]}]},
           "monitor_best": np.float64(monitor_best), "config": config, "criterion": {}}
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", buffer.getvalue())
    z.writestr("archive/byteorder", "little")
    for t in tensors:
      z.writestr(f"archive/data/{t.key}", t.array.astype(t.array.dtype.newbyteorder("<")).tobytes())
    z.writestr("archive/version", "3\n")
