import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax.interop import convert
from lgla_jax.models import ExpertResNetCifar


@pytest.mark.parametrize("impl", ["grouped", "split"])
def test_forward_matches_official(official, impl):
  d, variables, x = official
  model = ExpertResNetCifar(100, 3, conv_impl=impl)
  # The official model stacks experts on axis 1 ([B, E, ...]); ours lead with them.
  batch_first = lambda out, k: np.asarray(out[k]) if k == "output" else np.swapaxes(out[k], 0, 1)
  out = model.apply(variables, x, train=False)
  for k in ("output", "logits"):
    np.testing.assert_allclose(batch_first(out, k), d[f"eval.{k}"], rtol=0, atol=1e-4)
  # Eval-mode features at init are large (unit running stats): compare relatively.
  np.testing.assert_allclose(batch_first(out, "feat"), d["eval.feat"], rtol=1e-5, atol=1e-4)
  out, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  for k in ("output", "logits", "feat"):
    np.testing.assert_allclose(batch_first(out, k), d[f"train.{k}"], rtol=0, atol=1e-4)
  after = convert.torch_from_variables({"params": variables["params"], **updated},
                                       num_batches_tracked=1)
  keys = [k for k in d.keys() if k.startswith("after_train_forward.")]
  assert len(keys) == 31 * 3
  for k in keys:
    np.testing.assert_allclose(after[k[len("after_train_forward."):]], d[k], rtol=1e-5, atol=1e-6)


def test_output_shapes_and_param_counts(golden):
  summary = golden("resnet32_summary.json")
  for fname, (c, e) in {"resnet32_e3_c100.npz": (100, 3), "resnet32_e3_c10.npz": (10, 3),
                        "resnet32_e4_c100.npz": (100, 4)}.items():
    model = ExpertResNetCifar(c, e)
    out, variables = model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
    assert out["output"].shape == (2, c) and out["logits"].shape == (e, 2, c)
    assert out["feat"].shape == (e, 2, 64)
    params = variables["params"]
    count = lambda prefix: sum(int(np.prod(v.shape)) for k, sub in params.items()
                               if k.split("_")[0] == prefix for v in jax.tree.leaves(sub))
    ref = summary[fname]
    assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)) == ref["param_count"]
    for module, n in ref["per_module"].items():
      assert count(module.split(".")[1]) == n, module


def test_independent_layout_keeps_experts_separate():
  e = 4
  model = ExpertResNetCifar(10, e, depth=8, expert_layout="independent")
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  for i in range(e):
    g = jax.grad(lambda p: model.apply({**variables, "params": p}, x)["logits"][i].sum())(
        variables["params"])
    for name, block in g.items():
      if not (name.startswith("layer2s") or name.startswith("layer3s")):
        continue
      for leaf in jax.tree.leaves(block):
        w = leaf.shape[-1] // e
        for j in range(e):
          norm = float(jnp.abs(leaf[..., j * w:(j + 1) * w]).sum())
          assert (norm > 0) if i == j else (norm == 0), (name, i, j)


def test_init_follows_official_distribution():
  model = ExpertResNetCifar(100, 3)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  k = params["layer3s_1"]["conv1"]["kernel"]  # [3, 3, 64, 192], fan-in 576
  np.testing.assert_allclose(float(k.std()), np.sqrt(2 / 576), rtol=0.02)
  assert abs(float(k.mean())) < 2e-3
  w = params["linears_0"]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-5)
  assert float(w.max()) <= 1.0 and float(w.min()) >= -1.0
  bn = params["layer1_0"]["bn1"]
  assert (bn["scale"] == 1).all() and (bn["bias"] == 0).all()


def test_plain_linear_head_and_depth():
  model = ExpertResNetCifar(10, 2, depth=20, use_norm=False)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  out, variables = model.init_with_output(jax.random.PRNGKey(0), x)
  head = variables["params"]["linears_1"]
  assert set(head) == {"kernel", "bias"}
  feat = out["feat"][1]
  np.testing.assert_allclose(np.asarray(out["logits"][1]),
                             np.asarray(feat @ head["kernel"] + head["bias"]), rtol=1e-5, atol=1e-5)
  assert sum(1 for k in variables["params"] if k.startswith("layer1_")) == 3
  with pytest.raises(ValueError, match="6n\\+2"):
    ExpertResNetCifar(10, 3, depth=33).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="expert_layout"):
    ExpertResNetCifar(10, 3, expert_layout="vmap").init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("group_size", [0, 4])
def test_batchnorm_hand_written_vjp_matches_autodiff(group_size, masked):
  # BatchNorm's backward is written out by hand, also for a masked (padded) batch, whose
  # statistics leave out the padding; it must equal autodiff of the plain formula
  # (float64, so that only a wrong formula, not rounding, can fail it).
  from lgla_jax.models.layers import BatchNorm
  with jax.enable_x64():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, (8, 5, 5, 6)))
    scale = jnp.asarray(rng.normal(1.0, 0.5, 6))
    bias = jnp.asarray(rng.normal(0.0, 0.5, 6))
    dy = jnp.asarray(rng.normal(size=x.shape))
    mask = np.array([1, 1, 1, 0, 1, 1, 0, 0], bool) if masked else None
    bn = BatchNorm(dtype=jnp.float64, group_size=group_size)
    variables = bn.init(jax.random.key(0), x, train=True)

    def ours(x, scale, bias):
      params = {"scale": scale, "bias": bias}
      y, _ = bn.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                      train=True, mask=mask, mutable=["batch_stats"])
      return jnp.sum(y * dy)

    def reference(x, scale, bias):
      g = x.shape[0] // group_size if group_size else 1
      xg = x.reshape(g, -1, x.shape[-1])
      w = np.ones(x.shape[:1]) if mask is None else mask.astype(float)
      w = jnp.repeat(jnp.asarray(w), x.size // x.shape[0] // x.shape[-1]).reshape(g, -1, 1)
      mean = (xg * w).sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)
      var = ((xg - mean) ** 2 * w).sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)
      y = ((xg - mean) / jnp.sqrt(var + 1e-5) * scale + bias).reshape(x.shape)
      return jnp.sum(y * dy)

    np.testing.assert_allclose(ours(x, scale, bias), reference(x, scale, bias), rtol=1e-12)
    for a, b in zip(jax.grad(ours, argnums=(0, 1, 2))(x, scale, bias),
                    jax.grad(reference, argnums=(0, 1, 2))(x, scale, bias)):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bn_group_size", [0, 4])
def test_masked_training_forward_equals_forward_on_the_valid_images(bn_group_size):
  # BatchNorm statistics (and the running statistics they update) over the valid images
  # of a padded batch only; the padding cannot reach the valid outputs.
  model = ExpertResNetCifar(10, 3, depth=8, bn_group_size=bn_group_size)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  apply = lambda images, mask=None: model.apply(variables, images, train=True, mask=mask,
                                                mutable=["batch_stats"])
  if bn_group_size:  # two groups of 4: the first full, the second with 2 valid images
    mask = jnp.asarray([True] * 6 + [False] * 2)
    out_masked, stats_masked = apply(x, mask)
    # Reference: the two groups [0:4] and [4:6] on their own (running stats follow group 0).
    plain = ExpertResNetCifar(10, 3, depth=8)
    first, ref_stats = plain.apply(variables, x[:4], train=True, mutable=["batch_stats"])
    second, _ = plain.apply(variables, x[4:6], train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out_masked["logits"][:, :4], first["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out_masked["logits"][:, 4:6], second["logits"], rtol=1e-4, atol=1e-4)
  else:
    mask = jnp.arange(8) < 5
    out_masked, stats_masked = apply(x.at[5:].set(100.0), mask)  # wild padding
    out_valid, ref_stats = apply(x[:5])
    np.testing.assert_allclose(out_masked["logits"][:, :5], out_valid["logits"], rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(stats_masked), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_bn_group_of_padding_only_keeps_the_gradients_finite():
  # The padded last batch can leave a whole BatchNorm group without a valid image (18 of 32
  # images, groups of 8): its variance is 0, and a deep network used to overflow there and
  # turn the weight gradients into NaN although the loss masks the padding out.
  model = ExpertResNetCifar(10, 3, depth=20, bn_group_size=4)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(12, 8, 8, 3)), jnp.float32).at[6:].set(50.0)
  mask = jnp.arange(12) < 6  # groups: 4 valid, 2 valid + 2 padding, 4 padding
  variables = model.init(jax.random.key(0), x, train=False)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, mask=mask,
                         mutable=["batch_stats"])
    return jnp.sum(jnp.where(mask[None, :, None], out["logits"], 0.0))

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_a_short_last_batch_is_grouped_as_dataparallel_splits_it():
  # DataParallel cuts the n valid images of an epoch's short last batch into chunks of
  # ceil(n / GPUs) (torch.chunk): 7 images on 4 GPUs are 2, 2, 2, 1, not a full group of
  # 4 and a group of 3. The step rearranges the padded batch so that the groups hold that.
  from lgla_jax.models.layers import dataparallel_slots
  mask = jnp.arange(16) < 7
  source = dataparallel_slots(mask, 4)
  assert np.asarray(mask[source]).reshape(4, 4).sum(1).tolist() == [2, 2, 2, 1]
  assert np.array_equal(dataparallel_slots(jnp.ones(16, bool), 4), np.arange(16))
  assert sorted(np.asarray(source).tolist()) == list(range(16))  # a permutation
  model = ExpertResNetCifar(10, 3, depth=8, bn_group_size=4)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(16, 16, 16, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  out, stats = model.apply(variables, x[source], train=True, mask=mask[source],
                           mutable=["batch_stats"])
  plain = ExpertResNetCifar(10, 3, depth=8)
  for g, (lo, hi) in enumerate([(0, 2), (2, 4), (4, 6), (6, 7)]):
    ref, ref_stats = plain.apply(variables, x[lo:hi], train=True, mutable=["batch_stats"])
    got = out["logits"][:, 4 * g:4 * g + hi - lo]
    np.testing.assert_allclose(got, ref["logits"], rtol=1e-4, atol=1e-4)
    if g == 0:  # the running statistics are the first GPU's
      for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
