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

import os
import re
from collections.abc import Mapping

import numpy as np

from lgla_jax import errors
from lgla_jax.errors import WeightsError  # noqa: F401 - raised here, named by callers
from lgla_jax.interop import torch_file

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


def read_state_dict(path: str, what: str = "pretrained weights",
                    hint: str = PRETRAINED_MISSING) -> dict[str, np.ndarray]:
  """PyTorch-named arrays from an ``.npz``, ``.safetensors`` or ``.pth`` (read without
  torch); a missing file is a ``FileNotFoundError`` naming ``what`` it was and ``hint``."""
  if not os.path.exists(path):
    raise errors.NotFound(f"{what} {path} do not exist: {hint}")
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  if path.endswith(".safetensors"):  # lgla_jax.export's output
    from safetensors.numpy import load_file
    return load_file(path)
  return torch_file.read_state_dict(path)


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
