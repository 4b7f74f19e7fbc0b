"""Load an ``lgla_jax.export`` file into the official PyTorch model and compare outputs.

The export's own test checks names, shapes, dtypes and values against the official
``state_dict`` layout without torch. This script closes the loop in PyTorch itself, in
two steps (two Python environments: lgla-jax's, and one with torch and the official code):

  # 1. lgla-jax: export WORKDIR to REF.safetensors, write REF.npz (64 test images of the
  #    run's data set, lgla-jax's eval- and train-mode outputs on them)
  python tools/check_export_in_torch.py reference WORKDIR REF
  # 2. torch: strict load_state_dict of REF.safetensors into the official model, the
  #    same forward passes, the largest differences as one JSON line
  LGLA_REF=/path/to/LGLA /tmp/torchvenv/bin/python tools/check_export_in_torch.py check REF

  # 1'. instead of a trained run: a config's model at a perturbed initialisation (every
  #     weight and BatchNorm statistic moved off its initial value), 2 random images;
  #     with CHECK_X64=1 both sides compute in float64 (rounding then vanishes: what
  #     remains is a real difference)
  [CHECK_X64=1] python tools/check_export_in_torch.py reference-init configs/imagenet_lt_resnext50.py REF

Models: ResNet-32 (``ResNet32Model``), and the ImageNet-size ResNet-50, ResNeXt-50 and the
Places ResNet-152 (``ResNet50Model``, ``ResNeXt50Model``, ``ResNet152Model`` with the
official configs' arguments). Nothing of the official code is copied; it is imported from
$LGLA_REF (which needs pandas besides torch).
"""

import json
import os
import sys

import numpy as np

NUM_IMAGES = 64


def official_model(model_config) -> tuple[str, dict]:
  """The official model class (in ``model/model.py``) and arguments of an lgla-jax model."""
  common = {"reduce_dimension": False, "use_norm": True, "returns_feat": True,
            "num_experts": int(model_config.num_experts)}
  if model_config.name == "resnet_cifar" and model_config.get("depth", 32) == 32:
    return "ResNet32Model", common
  if model_config.name == "resnet":
    arch = model_config.arch
    if arch == "resnet152" and model_config.get("separate_experts"):
      return "ResNet152Model", {**common, "share_layer3": False}
    if arch in ("resnet50", "resnext50_32x4d") and not model_config.get("separate_experts"):
      return {"resnet50": "ResNet50Model", "resnext50_32x4d": "ResNeXt50Model"}[arch], common
  raise SystemExit(f"no official counterpart checked here for model {model_config.to_dict()}")


def _outputs(model, variables, images):
  """Eval- and train-mode outputs, and the running statistics after the train-mode pass
  under the official names."""
  from lgla_jax import export
  params = variables["params"]
  model_state = {k: v for k, v in variables.items() if k != "params"}
  out_eval, _ = model.apply(params, model_state, images, train=False)
  out_train, new_state = model.apply(params, model_state, images, train=True)
  stats = {k: v for k, v in export.official_state_dict({"params": params, **new_state}, 0).items()
           if k.endswith(("running_mean", "running_var"))}
  return {"images_NCHW": np.asarray(images).transpose(0, 3, 1, 2),
          "eval_output": out_eval["output"], "eval_logits_ExBxC": out_eval["logits"],
          "train_output": out_train["output"], "train_logits_ExBxC": out_train["logits"],
          **{"stats/" + k: v for k, v in stats.items()}}


def reference_init(config_path: str, ref: str):
  """Step 1' (lgla-jax's environment): a config's model, perturbed, without a run."""
  import importlib.util
  import jax
  x64 = os.environ.get("CHECK_X64") == "1"
  jax.config.update("jax_enable_x64", x64)
  import jax.numpy as jnp
  from safetensors.numpy import save_file
  from lgla_jax import export
  from lgla_jax import models
  from lgla_jax.data import catalog
  from lgla_jax.data import sources

  path, _, arg = config_path.partition(":")
  spec = importlib.util.spec_from_file_location("config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.model.pretrained = "none"
  config.model.bn_group_size = 0  # (torch's training-mode pass normalises the whole batch)
  name, kwargs = official_model(config.model)
  num_classes = catalog.DATASETS[config.dataset.name].num_classes
  dtype = jnp.float64 if x64 else jnp.float32
  model = models.build(config.model, num_classes, dtype)
  size = config.dataset.image_size
  params, model_state = model.init(jax.random.PRNGKey(0), (size, size, 3))
  variables = jax.tree.map(lambda v: v.astype(dtype), {"params": params, **model_state})
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  # every value moves (BatchNorm's variances stay positive), so nothing matches by chance
  moved = [x * jnp.exp(0.2 * jax.random.normal(k, x.shape)) + 0.05 * jax.random.normal(k, x.shape)
           if x.ndim == 1 else x + 0.1 * jnp.std(x) * jax.random.normal(k, x.shape)
           for x, k in zip(leaves, keys)]
  variables = jax.device_get(jax.tree.unflatten(tree, moved))
  variables = {c: v if c == "params" else jax.tree.map(abs, v) for c, v in variables.items()}
  tensors = {k: np.array(v, order="C") for k, v in export.official_state_dict(variables, 0).items()}
  save_file(tensors, ref + ".safetensors", metadata={"format": "pt"})
  images = jax.random.normal(jax.random.PRNGKey(2), (2, size, size, 3), dtype)
  np.savez(ref + ".npz", official_model=name, float64=x64, official_kwargs=json.dumps(kwargs),
           num_classes=num_classes, **_outputs(model, variables, images))
  print(f"wrote {ref}.safetensors ({len(tensors)} tensors) and {ref}.npz ({name})")


def reference(workdir: str, ref: str):
  """Step 1 (lgla-jax's environment)."""
  import jax.numpy as jnp
  from lgla_jax import export
  from lgla_jax import models
  from lgla_jax.data import catalog
  from lgla_jax.data import sources
  from lgla_jax.train import steps

  tensors = export.export(workdir, ref + ".safetensors")
  variables, meta, config = export.restore_variables(workdir)
  name, kwargs = official_model(config.model)
  test = sources.load(config.dataset).test
  images = steps.normalize(test.images[:NUM_IMAGES], config.dataset.mean, config.dataset.std)
  num_classes = catalog.DATASETS[config.dataset.name].num_classes
  model = models.build(config.model, num_classes, jnp.float32)
  np.savez(ref + ".npz", official_model=name, official_kwargs=json.dumps(kwargs),
           num_classes=num_classes, float64=False, **_outputs(model, variables, images))
  print(f"wrote {ref}.safetensors ({len(tensors)} tensors, step {meta['step']}) and {ref}.npz")


def check(ref: str):
  """Step 2 (torch and the official code)."""
  import torch
  from safetensors.torch import load_file

  sys.path.insert(0, os.environ["LGLA_REF"])
  import model.model as official  # the official models, from the checkout

  data = np.load(ref + ".npz")
  # (the Places model loads its ImageNet trunk in its constructor; load_state_dict below
  # replaces every tensor anyway)
  official.init_weights = lambda model, weights_path, caffe=False: model
  torch.manual_seed(0)
  net = getattr(official, str(data["official_model"]))(
      int(data["num_classes"]), **json.loads(str(data["official_kwargs"])))
  if bool(data["float64"]):
    net = net.double()
  missing, unexpected = net.load_state_dict(load_file(ref + ".safetensors"), strict=True)
  x = torch.from_numpy(data["images_NCHW"])
  # (the official model returns the expert logits as [B, E, C])
  diff = lambda out, name: {
      "output": float(np.abs(out["output"].detach().numpy() - data[f"{name}_output"]).max()),
      "logits": float(np.abs(out["logits"].detach().numpy().transpose(1, 0, 2)
                             - data[f"{name}_logits_ExBxC"]).max())}
  with torch.no_grad():
    out_eval = net.eval()(x)
    eval_diff = diff(out_eval, "eval")
    train_diff = diff(net.train()(x), "train")  # (updates the running statistics)
  agree = float((out_eval["output"].argmax(1).numpy() == data["eval_output"].argmax(1)).mean())
  buffers = net.state_dict()
  stats = [k[len("stats/"):] for k in data.files if k.startswith("stats/")]
  # (relative to each buffer's largest value: deep random networks have large statistics)
  stats_diff = max(float(np.abs(buffers[k].numpy() - data["stats/" + k]).max()
                         / np.abs(data["stats/" + k]).max()) for k in stats)
  print(json.dumps({"strict_load": {"missing": len(missing), "unexpected": len(unexpected)},
                    "eval_max_abs_diff": eval_diff, "train_mode_max_abs_diff": train_diff,
                    "running_stats_max_rel_diff": stats_diff, "running_stats": len(stats),
                    "eval_logit_magnitude": float(np.abs(data["eval_output"]).max()),
                    "same_prediction": agree, "images": list(x.shape),
                    "model": str(data["official_model"]),
                    "torch": torch.__version__}))


if __name__ == "__main__":
  if len(sys.argv) == 4 and sys.argv[1] in ("reference", "reference-init"):
    (reference if sys.argv[1] == "reference" else reference_init)(sys.argv[2], sys.argv[3])
  elif len(sys.argv) == 3 and sys.argv[1] == "check":
    check(sys.argv[2])
  else:
    sys.exit(__doc__)
