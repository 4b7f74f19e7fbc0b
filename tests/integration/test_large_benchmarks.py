"""ImageNet-size benchmarks on tiny generated JPEG trees: readers, recipes, quick configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from lgla_jax import errors
from lgla_jax.train import run as run_lib
from lgla_jax.augment import imagenet_host
from lgla_jax.data import catalog
from lgla_jax.data import pipeline
from lgla_jax.data import split_files
from lgla_jax.train import evaluation
from lgla_jax.train import feed
from lgla_jax.train import sharding
from lgla_jax.models import ExpertResNetCifar
from helpers import config_of, make_tree

pytestmark = pytest.mark.integration  # ImageNet-size models and pipelines on generated JPEG trees.


def test_eval_decoding_in_worker_processes_gives_the_same_batches(tmp_path):
  root, splits = make_tree(tmp_path, "imagenet_lt", num_test=23)
  data = split_files.load("imagenet_lt", str(splits), str(root))
  batches = {}
  for workers in (0, 2):
    batches[workers] = list(pipeline.eval_iterator(
        data.test.images, data.test.labels, global_batch=10, image_size=32, files=True,
        num_workers=workers))
  assert len(batches[0]) == len(batches[2]) == 3
  for a, b in zip(batches[0], batches[2]):
    assert a["image"].shape == (10, 32, 32, 3)
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(a[key], b[key])
  assert sum(int(b["mask"].sum()) for b in batches[2]) == 23


@pytest.mark.parametrize("name, augment_on_device", [
    # the imagenet recipe in the step: the host hands over the recipe's crops
    ("imagenet_lt_resnet50", True), ("imagenet_lt_resnext50", False),
    ("inaturalist_resnet50", False), ("places_lt_resnet152", False)])
def test_quick_config_trains_a_step_and_evaluates(tmp_path, name, augment_on_device):
  dataset = {"imagenet": "imagenet_lt", "inaturali": "inaturalist2018", "places_lt": "places_lt"}[name[:9].rstrip("_")]
  root, splits = make_tree(tmp_path, dataset)
  fields = {"dataset.data_dir": str(root), "dataset.split_dir": str(splits),
            "augment.on_device": augment_on_device}
  if name.startswith("places"):  # its ResNet-152 compiles for minutes on 2 cores; the same
    fields["model.arch"] = "resnet26"  # bottleneck blocks, separate experts, fewer of them
  config = config_of(name, **fields)
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config, mesh)
  data, state, steps = run.splits, run.state, run.steps
  assert data.class_counts[0] == 6 and data.num_classes == catalog.DATASETS[dataset].num_classes
  assert (run.config.augment.on_device, run.config.dataset.on_device) == (augment_on_device, False)
  # The official trainer selects on the validation split where the data set has one
  selects_on_val = dataset in ("imagenet_lt", "places_lt")
  assert run.config.dataset.select_on == ("val" if selects_on_val else "test")
  assert (data.val is not None) == selects_on_val
  batch = next(feed.train_batches(run, 0, 1))
  assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8
  if augment_on_device:  # exactly the host recipe's crops (its first step), same draws
    rng = np.random.default_rng([config.seed, 0, 0xA06])
    seeds = rng.integers(0, 2**63 - 1, size=config.batch_size)
    paths = data.train.images[pipeline.batch_indices(
        pipeline.epoch_permutation(config.seed, 0, len(data.train.labels)), 0,
        config.batch_size)[0]]
    crops = [imagenet_host.random_resized_crop(Image.open(p).convert("RGB"),
                                                  np.random.default_rng(s), 64)
             for p, s in zip(paths, seeds)]
    np.testing.assert_array_equal(batch["image"], np.stack([np.asarray(c) for c in crops]))
  state, metrics = steps.train(state, pipeline.to_global(batch, sharding.batch_sharding(mesh)))
  assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
  report = evaluation.run_evaluation(steps, state, data.test, data.class_counts, config, mesh)
  assert report["num_images"] == 10 and len(report["experts"]) == 3


def test_split_file_errors(tmp_path):
  root, splits = make_tree(tmp_path, "places_lt")
  with pytest.raises(FileNotFoundError, match="image root"):
    split_files.read_split_file(str(splits / "Places_LT_train.txt"), str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="split_dir|data_txt"):
    split_files.read_split_file(str(splits / "missing.txt"), str(root))
  bad = splits / "bad.txt"
  bad.write_text("train/img_0.jpg 3\ntrain/img_1.jpg\n")
  with pytest.raises(errors.DataError, match="line 2"):
    split_files.read_split_file(str(bad), str(root))
  bad.write_text("train/nothing.jpg 3\n")
  with pytest.raises(FileNotFoundError, match="image root the split file"):
    split_files.read_split_file(str(bad), str(root))
  with pytest.raises(FileNotFoundError, match="split_dir"):
    split_files.load("places_lt", None, str(root))


def test_imagenet_recipes():
  img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (90, 60, 3), dtype=np.uint8))
  for recipe in ("imagenet", "places"):
    a = imagenet_host.train_image(img, np.random.default_rng(3), recipe, 64)
    b = imagenet_host.train_image(img, np.random.default_rng(3), recipe, 64)
    c = imagenet_host.train_image(img, np.random.default_rng(4), recipe, 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
  out = imagenet_host.eval_image(img, 224, 256)  # 60x90: short side -> 256, centre 224
  assert out.shape == (224, 224, 3)
  flat = Image.fromarray(np.full((100, 50, 3), 7, np.uint8))
  assert (imagenet_host.eval_image(flat, 32, 36) == 7).all()
  crops = {imagenet_host.random_resized_crop(img, np.random.default_rng(s), 16).tobytes() for s in range(10)}
  assert len(crops) > 5
  with pytest.raises(ValueError, match="recipe"):
    imagenet_host.train_image(img, np.random.default_rng(0), "cifar", 64)


def test_bn_group_size_normalises_groups_like_separate_gpus():
  model = ExpertResNetCifar(10, 3, depth=8)
  grouped = ExpertResNetCifar(10, 3, depth=8, bn_group_size=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  out, new = grouped.apply(variables, x, train=True, mutable=["batch_stats"])
  first, new_first = model.apply(variables, x[:4], train=True, mutable=["batch_stats"])
  second, _ = model.apply(variables, x[4:], train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(np.asarray(out["logits"]),
                             np.concatenate([first["logits"], second["logits"]], axis=1), atol=1e-4)
  # running statistics follow the first group, as DataParallel keeps device 0's replica
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
               new["batch_stats"], new_first["batch_stats"])


@pytest.mark.parametrize("name, gpus", [("imagenet_lt_resnet50", 2), ("imagenet_lt_resnext50", 2),
                                        ("inaturalist_resnet50", 4), ("places_lt_resnet152", 4)])
def test_batchnorm_groups_default_to_the_official_per_gpu_share(name, gpus):
  """DataParallel on the official GPU count: each GPU normalised batch / n_gpu images."""
  from lgla_jax import models
  c = config_of(name, "")
  assert c.model.bn_group_size == c.batch_size // gpus
  # The configured model normalises each group as a separate sub-batch and keeps the first
  # group's running statistics (shown on the quick network, whose groups are 8 / 4 = 2 images
  # for 4 GPUs, 4 for 2; the float64 check once per group size, to keep CI short).
  quick = config_of(name)
  g = quick.model.bn_group_size
  assert g == 8 // gpus
  if name not in ("imagenet_lt_resnet50", "inaturalist_resnet50"):
    return
  # float64 (groups of 2-4 images make float32 BatchNorm noisy): a wrong grouping moves the
  # logits by O(1), rounding by < 1e-7.
  with jax.enable_x64():
    model = models.build(quick.model, 10, jnp.float64)
    whole = quick.model.copy_and_resolve_references()
    whole.bn_group_size = 0
    plain = models.build(whole, 10, jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 64, 64, 3), jnp.float64)
    params, state = model.init(jax.random.PRNGKey(1), x.shape[1:])
    params, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, state))
    out, new_state = model.apply(params, state, x, train=True)
    parts = [plain.apply(params, state, x[i:i + g], train=True) for i in range(0, 8, g)]
    np.testing.assert_allclose(np.asarray(out["logits"]),
                               np.concatenate([p[0]["logits"] for p in parts], axis=1), rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(parts[0][1])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_places_refuses_to_train_without_its_pretrained_weights():
  from lgla_jax import errors
  from lgla_jax.config import validate as validate_lib
  from lgla_jax.models import pretrained
  c = config_of("places_lt_resnet152", "")
  with pytest.raises(errors.ConfigError, match="resnet152.pth.*pretrained=none"):
    validate_lib.validate(c)
  c.model.pretrained = "none"  # random initialisation, said explicitly
  validate_lib.validate(c)
  assert pretrained.pretrained_file(c.model) is None
  c.model.pretrained = "/data/resnet152.pth"
  validate_lib.validate(c)
  assert pretrained.pretrained_file(c.model) == "/data/resnet152.pth"
  assert config_of("places_lt_resnet152").model.pretrained == "none"  # the smoke run says so


def test_randaugment_fills_with_the_imagenet_grey_on_every_data_set():
  """The official loaders fill with (124, 116, 104) on iNaturalist too, not its own mean."""
  black = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
  corners = {tuple(np.asarray(imagenet_host.rand_augment(black, np.random.default_rng(s)))[0, 0])
             for s in range(300)}
  assert (124, 116, 104) in corners  # a rotation, shear or translation happened
  inat_mean = tuple(round(255 * m) for m in (0.466, 0.471, 0.380))
  assert inat_mean not in corners


def test_the_training_step_groups_a_short_last_batch_as_dataparallel():
  # 7 valid images of a padded batch of 16 in BatchNorm groups of 4: DataParallel's first GPU
  # gets images 0-1 (chunks of ceil(7 / 4) = 2), so the running statistics after the step
  # are those of a plain forward pass on those two images.
  from lgla_jax import models
  from lgla_jax.train import steps as steps_lib
  config = config_of("demo", "quick", **{"model.bn_group_size": 4, "batch_size": 16,
                                       "dataset.on_device": False, "augment.on_device": False})
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config, mesh)
  size = config.dataset.image_size
  images = np.random.default_rng(0).integers(0, 256, (16, size, size, 3), dtype=np.uint8)
  batch = {"image": images, "label": np.arange(16) % 10, "mask": np.arange(16) < 7}
  before = jax.device_get(run.state)
  state, _ = run.steps.train(run.state, pipeline.to_global(batch, sharding.batch_sharding(mesh)))
  whole = config.model.copy_and_resolve_references()
  whole.bn_group_size = 0
  plain = models.build(whole, 10, jnp.float32)
  x = steps_lib.normalize(jnp.asarray(images[:2]), config.dataset.mean, config.dataset.std)
  _, first_gpu = plain.apply(before.params, before.model_state, x, train=True)
  for a, b in zip(jax.tree.leaves(jax.device_get(state.model_state)), jax.tree.leaves(first_gpu)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_run_starts_from_the_pretrained_trunk_in_every_expert(tmp_path):
  """``--config.model.pretrained=FILE`` through ``run_lib.setup`` (Places-LT, the official
  ``init_weights(caffe=True)``): the stem, layer1 and layer2 from the file, each expert's
  layer3 / layer4 a copy of its layer3 / layer4; the classifiers keep their initialisation."""
  import re
  from lgla_jax import models
  from lgla_jax.interop import convert
  root, splits = make_tree(tmp_path, "places_lt")
  fields = {"dataset.data_dir": str(root), "dataset.split_dir": str(splits),
            "model.arch": "resnet26"}  # (as the quick run above: bottleneck blocks, fewer)
  single = config_of("places_lt_resnet152", **fields).model.copy_and_resolve_references()
  single.num_experts = 1
  params, model_state = models.build(single, 365, jnp.float32).init(jax.random.PRNGKey(7), (64, 64, 3))
  trunk = {re.sub(r"^layer([34])s\.0\.", r"layer\1.", k): v for k, v in convert.torch_from_variables(
      {"params": params, **model_state}, prefix="").items() if not k.startswith("linears")}
  np.savez(tmp_path / "resnet26.npz", **trunk)
  run = run_lib.setup(config_of("places_lt_resnet152", **fields, **{
      "model.pretrained": str(tmp_path / "resnet26.npz")}), sharding.make_mesh(jax.devices()[:1]))
  got = convert.torch_from_variables(jax.device_get({"params": run.state.params,
                                                     **run.state.model_state}), prefix="")
  experts = run.config.model.num_experts
  assert experts == 3
  for name, value in got.items():
    if name.startswith("linears.") or name.endswith("num_batches_tracked"):
      continue
    np.testing.assert_array_equal(value, trunk[re.sub(r"^layer([34])s\.\d+\.", r"layer\1.", name)], name)
  assert sum(n.startswith("layer4s.2.") for n in got) > 0  # the third expert was filled too
  fresh = run_lib.setup(config_of("places_lt_resnet152", **fields), sharding.make_mesh(jax.devices()[:1]))
  np.testing.assert_array_equal(jax.device_get(run.state.params["linears_2"]["kernel"]),
                                jax.device_get(fresh.state.params["linears_2"]["kernel"]))
