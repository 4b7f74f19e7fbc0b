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


@pytest.fixture(scope="module")
def resnext():
  model = ExpertResNet(10, 3, arch="resnext50_32x4d")
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  return model, model.init(jax.random.PRNGKey(0), x), x


@pytest.mark.integration
def test_forward_shapes_and_grouped_equals_split(resnext):
  model, variables, x = resnext
  out = model.apply(variables, x)
  assert out["output"].shape == (2, 10) and out["logits"].shape == (3, 2, 10)
  assert out["feat"].shape == (3, 2, 2048)
  grouped = ExpertResNet(10, 3, arch="resnext50_32x4d", conv_impl="grouped").apply(variables, x)
  split = ExpertResNet(10, 3, arch="resnext50_32x4d", conv_impl="split").apply(variables, x)
  np.testing.assert_allclose(np.asarray(grouped["logits"]), np.asarray(split["logits"]), atol=1e-4)


@pytest.mark.integration
def test_no_leakage_between_experts(resnext):
  model, variables, x = resnext
  for i in range(3):
    g = jax.grad(lambda p: model.apply({**variables, "params": p}, x[:1])["logits"][i].sum())(
        variables["params"])
    for name, block in g.items():
      if not name.startswith("layer3s"):
        continue
      for leaf in jax.tree.leaves(block):
        w = leaf.shape[-1] // 3
        for j in range(3):
          norm = float(jnp.abs(leaf[..., j * w:(j + 1) * w]).sum())
          assert (norm > 0) if i == j else (norm == 0), (name, i, j)


@pytest.mark.integration
def test_converter_round_trip(resnext):
  _, variables, _ = resnext
  sd = convert.torch_from_variables(variables)
  again = convert.variables_from_torch(sd, 3)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, dict(variables)), again)


def _tiny(experts, **kw):
  model = ExpertResNet(10, experts, arch="resnet26", separate_experts=True, base_planes=8, **kw)
  return model, model.init(jax.random.PRNGKey(experts), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.integration
def test_pretrained_trunk_fills_every_expert(tmp_path):
  import re
  _, single = _tiny(1)
  pretrained = {re.sub(r"^layer([34])s\.0\.", r"layer\1.", k): v
                for k, v in convert.torch_from_variables(single, prefix="").items()
                if not k.startswith("linears")}
  pretrained["fc.weight"] = np.zeros((1000, 256), np.float32)  # ignored, as official
  np.savez(tmp_path / "r26.npz", **pretrained)
  _, variables = _tiny(3)
  loaded = convert.load_pretrained_resnet(variables, str(tmp_path / "r26.npz"), 3)
  for e in range(3):
    for i in range(2):
      jax.tree.map(np.testing.assert_array_equal, loaded["params"][f"layer3s_{e}_{i}"],
                   jax.tree.map(np.asarray, single["params"][f"layer3s_0_{i}"]))
      jax.tree.map(np.testing.assert_array_equal, loaded["batch_stats"][f"layer4s_{e}_{i}"],
                   jax.tree.map(np.asarray, single["batch_stats"][f"layer4s_0_{i}"]))
  np.testing.assert_array_equal(loaded["params"]["conv1"]["kernel"], single["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(loaded["params"]["linears_2"]["kernel"], variables["params"]["linears_2"]["kernel"])

  with pytest.raises(FileNotFoundError, match="npz"):
    convert.load_pretrained_resnet(variables, str(tmp_path / "missing.npz"), 3)
  del pretrained["layer4.1.conv2.weight"]
  pretrained["layer3.0.conv1.weight"] = np.zeros((3, 3, 1, 1), np.float32)
  with pytest.raises(ValueError, match="do not fit"):
    convert.load_pretrained_resnet(variables, pretrained, 3)
