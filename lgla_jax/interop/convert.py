"""Convert between the official PyTorch ``state_dict`` and Flax variables (no torch needed).

PyTorch names map to Flax paths by joining list indices to their parent with ``_``
(``backbone.layer2s.0.conv1.weight`` -> ``params/layer2s_0/conv1/kernel``). Leaves:

* conv ``weight`` ``[out, in/g, kh, kw]`` <-> ``kernel`` ``[kh, kw, in/g, out]``;
* BatchNorm ``weight``/``bias`` <-> ``scale``/``bias``, ``running_mean``/``running_var`` <->
  ``batch_stats`` ``mean``/``var`` (``num_batches_tracked`` is dropped, and written back
  as ``num_batches_tracked`` on the way out);
* ``NormedLinear.weight`` ``[in, out]`` <-> ``kernel`` (same orientation, no bias);
* ``nn.Linear`` ``weight`` ``[out, in]`` <-> ``kernel`` ``[in, out]`` (it has a ``bias``).
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Mapping

import numpy as np

from lgla_jax import errors
from lgla_jax.errors import WeightsError, WeightsFileError  # noqa: F401 - raised here, named by callers
from lgla_jax.interop import torch_file
from lgla_jax.storage.paths import open_binary, path as as_path

_STRIP_PREFIXES = ("module.", "backbone.")


_INDEXED = re.compile(r"^(.*)_(\d+)$")


def _flax_module_path(torch_path: list[str]) -> tuple[str, ...]:
  out: list[str] = []
  for part in torch_path:
    if part.isdigit() and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return tuple(out)


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  if path[-1] in tree:
    raise WeightsError(f"two PyTorch entries map to {'/'.join(path)}")
  tree[path[-1]] = value


def _strip(name: str) -> str:
  changed = True
  while changed:
    changed = False
    for prefix in _STRIP_PREFIXES:
      if name.startswith(prefix):
        name, changed = name[len(prefix):], True
  return name


def variables_from_torch(state_dict: Mapping[str, np.ndarray], num_experts: int | None = None):
  """Official model ``state_dict`` (names -> numpy arrays) -> ``{"params", "batch_stats"}``.

  ``module.``/``backbone.`` prefixes are accepted. ``num_experts``, when given, is checked
  against the number of expert classifiers (``linears.K``) in the state dict.
  """
  sd = {_strip(k): np.asarray(v) for k, v in state_dict.items()}
  modules: dict[str, dict[str, np.ndarray]] = {}
  for name, value in sd.items():
    if "." not in name:
      raise WeightsError(f"unexpected top-level entry {name!r} in the state dict")
    mod, leaf = name.rsplit(".", 1)
    modules.setdefault(mod, {})[leaf] = value

  params: dict = {}
  stats: dict = {}
  for mod, leaves in modules.items():
    path = _flax_module_path(mod.split("."))
    is_bn = "running_mean" in leaves
    for leaf, value in leaves.items():
      if leaf == "num_batches_tracked":
        continue
      if is_bn:
        target = {"weight": (params, "scale"), "bias": (params, "bias"),
                  "running_mean": (stats, "mean"), "running_var": (stats, "var")}.get(leaf)
        if target is None:
          raise WeightsError(f"unexpected BatchNorm entry {mod}.{leaf}")
        _set(target[0], path + (target[1],), value.astype(np.float32))
      elif leaf == "weight" and value.ndim == 4:
        _set(params, path + ("kernel",), np.transpose(value, (2, 3, 1, 0)).astype(np.float32))
      elif leaf == "weight" and value.ndim == 2:
        kernel = value.T if "bias" in leaves else value  # nn.Linear is [out, in]
        _set(params, path + ("kernel",), np.ascontiguousarray(kernel).astype(np.float32))
      elif leaf == "bias" and value.ndim == 1:
        _set(params, path + ("bias",), value.astype(np.float32))
      else:
        raise WeightsError(f"don't know how to convert {mod}.{leaf} with shape {value.shape}")

  if num_experts is not None:
    heads = [k for k in params if _INDEXED.match(k) and k.startswith("linears_")]
    if heads and len(heads) != num_experts:
      raise WeightsError(f"state dict has {len(heads)} expert classifiers, expected {num_experts}")
  return {"params": params, "batch_stats": stats}


def _torch_name(path: tuple[str, ...]) -> str:
  return ".".join(re.sub(r"_(\d+)", r".\1", p) for p in path)


def _walk(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _walk(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def torch_from_variables(variables, prefix: str = "backbone.",
                         num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """Flax ``{"params", "batch_stats"}`` -> a PyTorch-named state dict of numpy arrays."""
  params = variables["params"]
  stats = variables.get("batch_stats", {})
  modules: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
  for path, value in _walk(params):
    modules.setdefault(path[:-1], {})[path[-1]] = np.asarray(value)
  bn_stats: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
  for path, value in _walk(stats):
    bn_stats.setdefault(path[:-1], {})[path[-1]] = np.asarray(value)

  out: dict[str, np.ndarray] = {}
  for mod, leaves in modules.items():
    name = prefix + _torch_name(mod)
    if mod in bn_stats:
      out[f"{name}.weight"] = leaves["scale"]
      out[f"{name}.bias"] = leaves["bias"]
      out[f"{name}.running_mean"] = bn_stats[mod]["mean"]
      out[f"{name}.running_var"] = bn_stats[mod]["var"]
      out[f"{name}.num_batches_tracked"] = np.asarray(num_batches_tracked, np.int64)
      continue
    kernel = leaves["kernel"]
    if kernel.ndim == 4:
      out[f"{name}.weight"] = np.transpose(kernel, (3, 2, 0, 1))
    elif "bias" in leaves:  # nn.Linear
      out[f"{name}.weight"] = np.ascontiguousarray(kernel.T)
      out[f"{name}.bias"] = leaves["bias"]
    else:  # NormedLinear keeps [in, out]
      out[f"{name}.weight"] = kernel
  return out


PRETRAINED_MISSING = (
    "give the ImageNet-pretrained ResNet-152 as a PyTorch .pth (torchvision's resnet152 "
    "weights, say) or an .npz of its state_dict (numpy.savez(path, **{k: v.numpy() for k, v "
    "in state_dict.items()}))")
SAFETENSORS_HEADER_MAX = 100_000_000  # the format's own limit on its JSON header
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                       "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4",
                       "U64": "<u8", "BOOL": "?", "BF16": "bfloat16"}


def _safetensors_entry(name, spec):
  """``(dtype, shape, start, end)`` of one header entry, or ``WeightsFileError``."""
  ok = (isinstance(spec, dict) and spec.get("dtype") in _SAFETENSORS_DTYPES
        and isinstance(spec.get("shape"), list) and isinstance(spec.get("data_offsets"), list)
        and len(spec["data_offsets"]) == 2
        and all(type(n) is int and n >= 0 for n in spec["shape"] + spec["data_offsets"]))
  if not ok:
    raise WeightsFileError(f"tensor {name!r:.80} has a malformed header entry {spec!r:.120}")
  if spec["dtype"] == "BF16":
    import ml_dtypes  # a dependency of jax
    dtype = np.dtype(ml_dtypes.bfloat16)
  else:
    dtype = np.dtype(_SAFETENSORS_DTYPES[spec["dtype"]])
  start, end = spec["data_offsets"]
  if end - start != math.prod(spec["shape"]) * dtype.itemsize:
    raise WeightsFileError(f"tensor {name!r:.80} of shape {spec['shape']} ({spec['dtype']}) "
                           f"states {end - start:,} bytes of data")
  return dtype, tuple(spec["shape"]), start, end


def _read_safetensors(path, budget) -> dict[str, np.ndarray]:
  """A ``.safetensors`` file (local or in a bucket), its header checked before any tensor is
  read: the length within the format's limit and the file, JSON, every tensor's bytes
  consistent with its shape, inside the file and not shared with another tensor."""
  with open_binary(path) as f:
    size = torch_file.size_of(f)
    if size < 8:
      raise WeightsFileError(f"{size} bytes: too short for a .safetensors file")
    n = int.from_bytes(f.read(8), "little")
    if n > SAFETENSORS_HEADER_MAX or 8 + n > size:
      raise WeightsFileError(f"its header length {n:,} exceeds the format's limit (100 MB) or "
                             f"the file ({size:,} bytes): not a .safetensors file")
    try:
      header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
      raise WeightsFileError(f"its header is not JSON ({e}): not a .safetensors file") from None
    if not isinstance(header, dict):
      raise WeightsFileError("its header is not a JSON object: not a .safetensors file")
    entries = [(*_safetensors_entry(k, v), k) for k, v in header.items() if k != "__metadata__"]
    data_end, last = size - 8 - n, 0
    for dtype, shape, start, end, name in sorted(entries, key=lambda e: e[2]):
      if start < last or end > data_end:
        raise WeightsFileError(f"tensor {name!r:.80} overlaps another or runs past the end of "
                               f"the file")
      last = end
      budget.take(f"tensor {name!r:.80}", end - start)
    out = {}
    for dtype, shape, start, end, name in entries:
      f.seek(8 + n + start)
      out[name] = np.empty(shape, dtype)
      if f.readinto(memoryview(out[name].reshape(-1).view(np.uint8))) != end - start:
        raise WeightsFileError(f"tensor {name!r:.80} is truncated")
  return out


def _read_npz(path, budget) -> dict[str, np.ndarray]:
  """An ``.npz`` (local or in a bucket) without ``numpy.load``: each member's size is
  counted before it is read (in bounded chunks, CRC checked), its header must state exactly
  the bytes it holds, and object arrays are refused (nothing is unpickled)."""
  from numpy.lib import format as npy
  out = {}
  with open_binary(path) as f, zipfile.ZipFile(_few_members(f)) as z:
    for info in z.infolist():
      if not info.filename.endswith(".npy"):
        raise WeightsFileError(f"member {info.filename!r:.80} is not an .npy array")
      budget.take(f"array {info.filename!r:.80}", info.file_size)
      raw = torch_file.read_member(z, info)
      head = io.BytesIO(raw[:1 << 16].tobytes())
      version = npy.read_magic(head)
      read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
      shape, fortran, dtype = read_header(head)
      if dtype.hasobject or dtype.kind not in "biuf":
        raise WeightsFileError(f"array {info.filename!r:.80} has dtype {dtype} (Python objects "
                               f"or records): refused, nothing of it is unpickled")
      if min(shape, default=0) < 0 or math.prod(shape) * dtype.itemsize != len(raw) - head.tell():
        raise WeightsFileError(f"array {info.filename!r:.80} states shape {shape} but holds "
                               f"{len(raw) - head.tell():,} bytes of data")
      out[info.filename[:-4]] = raw[head.tell():].view(dtype).reshape(
          shape, order="F" if fortran else "C")
  return out


def _few_members(f):
  """``f`` (an open zip), after checking that its end record states at most
  ``torch_file.MAX_MEMBERS`` members."""
  count = torch_file.member_count(f)
  if count is not None and count > torch_file.MAX_MEMBERS:
    raise WeightsFileError(f"a zip of {count:,} members: refused")
  f.seek(0)
  return f


def read_state_dict(path, what: str = "pretrained weights",
                    hint: str = PRETRAINED_MISSING, limits=None) -> dict[str, np.ndarray]:
  """PyTorch-named arrays from an ``.npz``, ``.safetensors`` or ``.pth`` (read without
  torch); a missing file is an ``errors.NotFound`` naming ``what`` it was and ``hint``.
  ``limits`` (``torch_file.Limits``, default ``Limits.default()``): how much the file may
  make this process hold. A file that cannot be read is one ``WeightsFileError`` (or
  ``torch_file.TorchFileError``) naming it. ``path``: a local path or a bucket URL."""
  p = as_path(path)
  if not p.exists():
    raise errors.NotFound(f"{what} {path} do not exist: {hint}")
  if p.is_dir():
    raise WeightsFileError(f"{what} {path} is a folder, not a weights file: {hint}")
  limits = limits or torch_file.Limits.default()
  readers = {".npz": _read_npz, ".safetensors": _read_safetensors}
  read = readers.get(p.suffix)
  if read is None:
    return torch_file.read_state_dict(path, limits)
  try:
    return read(path, torch_file.Budget(limits))
  except (WeightsFileError, torch_file.TorchFileError) as e:
    raise WeightsFileError(f"{path}: {e}") from None
  except Exception as e:  # noqa: BLE001 - whatever a malformed file provokes, it is one line
    reason = str(e).splitlines()[0][:200] if str(e) else ""
    raise WeightsFileError(f"{path} is not a readable {p.suffix} file "
                           f"({type(e).__name__}: {reason})") from None


def load_official_model(params, model_state, state_dict, source: str):
  """``(params, model_state)`` with every tensor taken from a full official model's
  ``state_dict`` (``module.``/``backbone.`` prefixes accepted). Each tensor the network
  has must be there with its shape and nothing else may be: the error names the
  mismatching tensors (the official ``load_state_dict`` is strict too)."""
  target = torch_from_variables({"params": params, **model_state}, prefix="")
  given = {_strip(k): np.asarray(v) for k, v in state_dict.items()}
  needed = [n for n in target if not n.endswith("num_batches_tracked")]
  missing = [n for n in needed if n not in given]
  unexpected = [n for n in given if n not in target]
  wrong = [f"{n} is {tuple(given[n].shape)}, the model's {tuple(target[n].shape)}"
           for n in needed if n in given and tuple(given[n].shape) != tuple(target[n].shape)]
  if missing or unexpected or wrong:
    parts = [f"{label} ({len(names)}): {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
             for label, names in (("missing", missing), ("unexpected", unexpected),
                                  ("other shapes", wrong)) if names]
    raise WeightsError(f"{source} does not fit this config's network; {'; '.join(parts)}. "
                     f"Use the config the checkpoint was trained with (data set, model.arch, "
                     f"model.num_experts, ...)")
  variables = variables_from_torch({n: given[n].astype(target[n].dtype) for n in needed})
  return variables["params"], ({"batch_stats": variables["batch_stats"]}
                               if "batch_stats" in model_state else {})


def load_pretrained_resnet(variables, weights, num_experts: int):
  """Fill a separate-experts ``ExpertResNet`` (Places-LT) from a single-branch ResNet.

  As the official ``init_weights(caffe=True)``: the shared stem, ``layer1`` and ``layer2``
  take the pretrained tensors of the same name, and every expert's ``layer3s[e]`` /
  ``layer4s[e]`` a copy of the pretrained ``layer3`` / ``layer4``; the classifiers keep
  their initialisation. ``weights`` is a path or a name -> array mapping. Every other
  tensor must be present with the right shape (the official code silently keeps the
  random init for missing ones; here that is an error).
  """
  source = read_state_dict(weights) if isinstance(weights, str) else dict(weights)
  source = {_strip(k): np.asarray(v) for k, v in source.items()}
  target = torch_from_variables(variables, prefix="")
  filled, problems = {}, []
  for name, value in target.items():
    if name.startswith("linears.") or name.endswith("num_batches_tracked"):
      filled[name] = value
      continue
    src = re.sub(r"^layer([34])s\.\d+\.", r"layer\1.", name)
    if src not in source:
      problems.append(f"missing {src}")
    elif tuple(source[src].shape) != tuple(value.shape):
      problems.append(f"{src}: shape {tuple(source[src].shape)}, the model needs {tuple(value.shape)}")
    else:
      filled[name] = source[src].astype(value.dtype)
  if problems:
    raise WeightsError(f"the pretrained weights do not fit this model ({len(problems)} problems, "
                     f"e.g. {problems[:3]}); they must be an ImageNet ResNet of the same depth")
  return variables_from_torch(filled, num_experts)
