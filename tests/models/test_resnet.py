import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax.interop import convert
from lgla_jax.models.resnet import ExpertResNet

OFFICIAL = {  # golden key -> (arch, separate experts, classes)
    "ResNet50Model_imagenet_lt": ("resnet50", False, 1000),
    "ResNeXt50Model_imagenet_lt": ("resnext50_32x4d", False, 1000),
    "ResNet152Model_places_lt": ("resnet152", True, 365),
}


def _abstract(model):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))


def _zeros(model):  # shaped like the variables, without allocating them
  return jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), _abstract(model))


def _abstract_params(model):
  return _abstract(model)["params"]


@pytest.mark.parametrize("key", OFFICIAL)
def test_parameter_counts_equal_official(golden, key):
  arch, separate, c = OFFICIAL[key]
  params = _abstract_params(ExpertResNet(c, 3, arch=arch, separate_experts=separate))
  ref = golden("big_models.json")[key]
  size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert size(params) == ref["total_params"]
  for module, n in ref["params_per_top_level_module"].items():
    name = module.split(".")[1]
    assert sum(size(v) for k, v in params.items() if k.split("_")[0] == name) == n, module
  assert params["linears_2"]["kernel"].shape == (2048, c)  # 2048 features per expert


def test_official_names_and_shapes():
  sd = convert.torch_from_variables(_zeros(ExpertResNet(1000, 3, arch="resnet50")))
  assert sd["backbone.layer3s.0.conv1.weight"].shape == (768, 512, 1, 1)  # grouped over 3 experts
  assert sd["backbone.layer3s.0.downsample.0.weight"].shape == (3072, 512, 1, 1)
  assert sd["backbone.layer4s.2.conv3.weight"].shape == (6144, 512, 1, 1)
  x = convert.torch_from_variables(_zeros(ExpertResNet(1000, 3, arch="resnext50_32x4d")))
  assert x["backbone.layer3s.0.conv2.weight"].shape == (1536, 16, 3, 3)  # groups 32 x 3 experts
  p = convert.torch_from_variables(
      _zeros(ExpertResNet(365, 3, arch="resnet152", separate_experts=True)))
  assert p["backbone.layer3s.2.35.conv3.weight"].shape == (1024, 256, 1, 1)
  assert p["backbone.layer4s.1.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)


