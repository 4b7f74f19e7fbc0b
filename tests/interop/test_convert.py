import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax.interop import convert
from lgla_jax.models import ExpertResNetCifar


def test_round_trip_official_state_dict(golden):
  d = golden("resnet32_e3_c100.npz")
  sd = {k: d[k] for k in d["state_dict_keys"]}
  back = convert.torch_from_variables(convert.variables_from_torch(sd, 3))
  assert list(back) == list(sd) or sorted(back) == sorted(sd)
  for k, v in sd.items():
    assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
    np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize("use_norm", [True, False])
def test_round_trip_flax_variables(use_norm):
  model = ExpertResNetCifar(10, 4, depth=8, use_norm=use_norm)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  sd = convert.torch_from_variables(variables)
  if use_norm:
    assert sd["backbone.linears.3.weight"].shape == (64, 10)  # NormedLinear: [in, out]
  else:
    assert sd["backbone.linears.3.weight"].shape == (10, 64)  # nn.Linear: [out, in]
  assert sd["backbone.layer2s.0.conv1.weight"].shape == (128, 16, 3, 3)
  again = convert.variables_from_torch({"module." + k: v for k, v in sd.items()}, 4)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, dict(variables)), again)


def test_bad_state_dicts():
  with pytest.raises(ValueError, match="expected 2"):
    convert.variables_from_torch({"linears.0.weight": np.zeros((4, 3)),
                                  "linears.1.weight": np.zeros((4, 3)),
                                  "linears.2.weight": np.zeros((4, 3))}, 2)
  with pytest.raises(ValueError, match="don't know"):
    convert.variables_from_torch({"conv1.weight": np.zeros((3,))})
