
import numpy as np
import pytest
from absl import flags

from lgla_jax import config as config_lib
from lgla_jax import errors
from lgla_jax.config import validate as validate_lib
from lgla_jax.models import pretrained
from lgla_jax.config import overrides as overrides_lib
from lgla_jax.train import evaluation
from helpers import ROOT, parse_config

CONFIGS = sorted(ROOT.glob("configs/*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", ["", "quick"])
def test_every_config_is_valid(path, arg):
  config = parse_config([f"--config={path}" + (f":{arg}" if arg else "")])
  if config.model.pretrained == pretrained.PRETRAINED_REQUIRED:  # Places-LT: weights first
    with pytest.raises(errors.ConfigError, match="model.pretrained"):
      validate_lib.validate(config, num_devices=1)
    config.model.pretrained = "/data/resnet152.pth"
  validate_lib.validate(config, num_devices=1)
  text = path.read_text()
  assert "python -m lgla_jax.main --config=configs/" in text  # the run command in the docstring


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_refuses_an_unknown_argument(path):
  """A mistyped variant (``:quik``) must not silently train the full config."""
  with pytest.raises(flags.Error, match="unknown config argument 'quik'"):
    parse_config([f"--config={path}:quik"])


def test_official_cifar_hyper_parameters():
  c = parse_config([f"--config={CONFIGS[0].parent / 'cifar100_ir100.py'}"])
  assert (c.num_epochs, c.batch_size, c.optim.lr, c.optim.momentum, c.optim.nesterov) == (400, 128, 0.1, 0.9, True)
  assert (c.optim.weight_decay, c.optim.warmup_epochs, tuple(c.optim.milestones)) == (2e-4, 5, (320, 360))
  assert (c.model.num_experts, c.model.use_norm, c.loss.tau, c.dataset.imbalance_factor) == (3, True, 2.5, 0.01)
  assert c.augment.autoaugment and c.augment.cutout == 16
  c10 = parse_config([f"--config={CONFIGS[0].parent / 'cifar10_ir50.py'}"])
  assert (c10.loss.tau, c10.dataset.imbalance_factor, c10.dataset.name) == (3.0, 0.02, "cifar10")


def test_command_line_overrides_and_unknown_keys():
  path = CONFIGS[0].parent / "cifar100_ir100.py"
  c = parse_config([f"--config={path}", "--config.optim.lr=0.05", "--config.dataset.data_dir=/data"])
  assert c.optim.lr == 0.05 and c.dataset.data_dir == "/data"
  with pytest.raises(Exception, match="optim.lrr|lrr"):
    parse_config([f"--config={path}", "--config.optim.lrr=0.05"])
  with pytest.raises(Exception, match="quick|argument"):
    parse_config([f"--config={path}:fast"])


@pytest.mark.parametrize("field,value,message", [
    ("dataset.name", "mnist", "dataset.name"),
    ("dataset.imbalance_factor", 100.0, "dataset.imbalance_factor"),
    ("dataset.source", "idx", "dataset.source"),
    ("model.depth", 33, "model.depth"),
    ("optim.schedule", "linear", "optim.schedule"),
    ("optim.milestones", (360, 320), "optim.milestones"),
    ("optim.step_epochs", (160,), "optim.step_epochs"),
    ("optim.step_epochs", (20, 10), "optim.step_epochs"),
    ("optim.cosine_t_max", -5, "optim.cosine_t_max"),
    ("optim.weight_decay", -1e-4, "optim.weight_decay"),
    ("optim.warmup_epochs", -1, "optim.warmup_epochs"),
    ("optim.gamma", 0.0, "optim.gamma"),
    ("loss.name", "nope", "loss.name"),
    ("batch_size", 100, "batch_size"),
    ("dtype", "float16", "dtype"),
])
def test_inconsistent_values_are_rejected(field, value, message):
  c = config_lib.base_config()
  section, _, key = field.rpartition(".")
  (c[section] if section else c)[key] = value
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    validate_lib.validate(c, num_devices=8)


@pytest.mark.parametrize("config_args,overrides,refused", [
    ([], {"loss.name": "ce", "loss.tau": 2.0}, "loss.tau"),
    ([], {"loss.name": "focal", "loss.beta": 0.99}, "loss.beta"),
    ([], {"optim.schedule": "cosine", "optim.warmup_epochs": 0}, "optim.warmup_epochs"),
    ([], {"optim.schedule": "step", "optim.milestones": (5, 8)}, "optim.milestones"),
    ([], {"optim.cosine_t_max": 50}, "optim.cosine_t_max"),  # warmup_multistep by default
    (["optim.schedule=cosine"], {"optim.cosine_t_max": 50, "loss.tau": 2.0}, None),
    ([], {"loss.name": "focal", "loss.gamma": 2.0, "optim.gamma": 0.5, "optim.lr": 0.05}, None),
    ([], {"loss.name": "nope", "loss.tau": 2.0}, None),  # validate() names the bad loss
    ([], {"model.arch": "resnet50"}, "model.arch"),  # resnet_cifar by default
    (["model.name=resnet"], {"model.depth": 20}, "model.depth"),
    (["model.name=resnet"], {"model.arch": "resnext50", "model.num_experts": 2}, None),
    (["augment.recipe=imagenet"], {"augment.cutout": 0}, "augment.cutout"),
    ([], {"augment.cutout": 0, "augment.on_device": False}, None),
    (["dataset.source=split_files"], {"dataset.imbalance_factor": 0.1}, "dataset.imbalance_factor"),
    ([], {"dataset.split_dir": "/data/splits"}, "dataset.split_dir"),  # cifar_archive
    (["dataset.source=sklearn"], {"dataset.data_dir": "/data"}, "dataset.data_dir"),
    ([], {"dataset.data_dir": "/data", "dataset.max_per_class": 50, "dataset.image_size": 28}, None),
])
def test_command_line_overrides_the_method_does_not_read_are_refused(config_args, overrides,
                                                                        refused):
  c = config_lib.base_config()
  for field, value in [a.split("=") for a in config_args] + list(overrides.items()):
    section, _, key = field.rpartition(".")
    c[section][key] = value
  if refused is None:
    overrides_lib.check(c, overrides)
    return
  with pytest.raises(errors.ConfigError, match=rf"config\.{refused}: .*does not read it"):
    overrides_lib.check(c, overrides)


@pytest.mark.parametrize("spec,values", [
    ("configs/fmnist_lt_ir100.py:quick", {"loss.tau": 3.0, "replicas.seeds": (1, 2)}),
    ("configs/cifar100_ir100.py", {"optim.schedule": "cosine", "optim.cosine_eta_min": 0.001}),
    ("configs/demo.py", {})])
def test_a_notebook_loads_the_config_the_command_line_would_give(spec, values):
  root = ROOT
  loaded = overrides_lib.load(str(root / spec), values)
  flags_ = [f"--config.{k}={v if isinstance(v, str) else repr(v).replace(' ', '')}"
            for k, v in values.items()]
  assert loaded.to_dict() == parse_config([f"--config={root / spec}", *flags_]).to_dict()
  if values:
    assert loaded.to_dict() != overrides_lib.load(str(root / spec)).to_dict()


@pytest.mark.parametrize("values,message", [
    ({"loss.taux": 2.0}, r"config\.loss\.taux: unknown field"),
    ({"losses.tau": 2.0}, r"config\.losses\.tau: no section 'losses'"),
    ({"seed.x": 2}, r"config\.seed\.x: 'seed' is a field"),
    ({"loss.tau": "high"}, r"config\.loss\.tau: 'high'"),
    ({"loss.name": "ce", "loss.tau": 2.0}, r"config\.loss\.tau: the loss 'ce' does not read it"),
])
def test_a_notebook_override_is_refused_as_on_the_command_line(values, message):
  root = ROOT
  with pytest.raises(errors.ConfigError, match=message):
    overrides_lib.load(str(root / "configs/demo.py"), values)
  with pytest.raises(errors.ConfigError, match="not found"):
    overrides_lib.load(str(root / "configs/nope.py"))


def test_every_name_has_its_fields_listed():
  """The tables ``overrides.check`` reads cover every loss, schedule, model, recipe and data
  source, and list only fields that exist."""
  from lgla_jax import losses
  from lgla_jax import models
  from lgla_jax import optim
  from lgla_jax.augment import recipes
  from lgla_jax.data import catalog
  from lgla_jax.data import sources
  c = config_lib.base_config()
  tables = {"loss": {n: s.fields for n, s in losses.REGISTRY.items()},
            "optim": optim.SCHEDULE_FIELDS,
            "model": {n: s.fields for n, s in models.REGISTRY.items()},
            "augment": {n: r.fields for n, r in recipes.RECIPES.items()},
            "dataset": sources.source_fields()}
  assert set(tables["dataset"]) == ({s for info in catalog.DATASETS.values() for s in info.sources}
                                    | set(sources.OWN_DATA_SOURCES))
  assert {info.recipe for info in catalog.DATASETS.values()} <= set(tables["augment"])
  for section, table in tables.items():
    for name, fields in table.items():
      assert all(f in c[section] for f in fields), (section, name, fields)


def test_unknown_key_added_in_code_is_rejected():
  c = config_lib.base_config()
  c.optim.lr_decay = 0.5
  with pytest.raises(ValueError, match="optim.lr_decay"):
    validate_lib.validate(c)


@pytest.mark.parametrize("overrides,message", [
    ({"loss.name": "focal", "loss.gamma": -1.0}, "loss.gamma"),
    ({"loss.name": "class_balanced_ce", "loss.beta": 1.0}, "loss.beta"),
    ({"loss.name": "ldam", "model.use_norm": False}, "model.use_norm"),
    ({"loss.name": "lgla", "model.num_experts": 1}, "model.num_experts"),
    ({"model.name": "vit"}, "model.name"),
    ({"model.expert_widths": (24, 20)}, "model.expert_widths"),
    ({"augment.rotate": -5.0}, "augment.rotate"),
])
def test_method_fields_are_checked_by_the_modules_that_own_them(overrides, message):
  c = config_lib.base_config()
  for field, value in overrides.items():
    section, _, key = field.rpartition(".")
    c[section][key] = value
  with pytest.raises(errors.ConfigError, match=message.replace(".", r"\.")):
    validate_lib.validate(c, num_devices=1)


def test_names_come_from_the_registries():
  """A loss or model registered in its module is a valid config name at once."""
  from lgla_jax import losses
  from lgla_jax import models
  c = config_lib.base_config()
  c.loss.name, c.model.name = "my_loss", "my_model"
  with pytest.raises(errors.ConfigError, match="model.name"):
    validate_lib.validate(c, num_devices=1)
  models.register("my_model", models.resnet_cifar.build)
  losses.register("my_loss")(lambda *a: None)
  try:
    validate_lib.validate(c, num_devices=1)
  finally:
    del models.REGISTRY["my_model"], losses.REGISTRY["my_loss"]


def test_ride_and_ldam_drw_recipes():
  """The two recipes as their code bases run them (see the config docstrings)."""
  from lgla_jax import optim
  ride = parse_config([f"--config={CONFIGS[0].parent / 'cifar100_ir100_ride.py'}"])
  ldam = parse_config([f"--config={CONFIGS[0].parent / 'cifar100_ir100_ldam_drw.py'}"])
  for c in (ride, ldam):
    lr = optim.lr_per_epoch(c.optim, c.num_epochs)  # lr[e - 1] is epoch e's (1-based)
    np.testing.assert_allclose(lr[[0, 4, 159, 160, 179, 180, 199]],
                               [0.02, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5], rtol=1e-12)
    assert (c.num_epochs, c.batch_size, c.loss.reweight_epoch) == (200, 128, 160)
    assert not c.augment.autoaugment and c.augment.cutout == 0 and c.dataset.imbalance_factor == 0.01
  assert (ride.model.num_experts, tuple(ride.model.expert_widths), ride.model.expert_layout) == (
      3, (24, 48), "independent")
  assert (ride.loss.name, ride.loss.additional_diversity_factor, ride.optim.weight_decay,
          ride.optim.nesterov, ride.augment.rotate) == ("ride", -0.45, 5e-4, True, 15.0)
  assert (ldam.model.num_experts, ldam.loss.name, ldam.loss.max_m, ldam.optim.weight_decay,
          ldam.optim.nesterov, ldam.augment.rotate) == (1, "ldam", 0.5, 2e-4, False, 0.0)


@pytest.mark.parametrize("loss", ["lgla", "ce", "class_balanced_ce", "focal", "logit_adjusted",
                                  "ldam", "ride"])
def test_fashion_mnist_baseline_variants(loss):
  """``fmnist_lt_ir100.py:NAME`` changes only the loss; with ``quick`` the re-weighting of
  ldam / ride falls into the second (last) epoch."""
  path = CONFIGS[0].parent / "fmnist_lt_ir100.py"
  base = parse_config([f"--config={path}"])
  c = parse_config([f"--config={path}:{loss}"])
  validate_lib.validate(c, num_devices=1)
  assert c.loss.name == loss
  differ = {k for k in c.to_dict() if c.to_dict()[k] != base.to_dict()[k]}
  assert differ <= {"loss"}
  if loss in ("ldam", "ride"):
    assert c.loss.reweight_epoch == c.optim.milestones[0] == 9
    quick = parse_config([f"--config={path}:quick,{loss}"])
    validate_lib.validate(quick, num_devices=1)
    assert quick.loss.reweight_epoch == 1 and quick.num_epochs == 2
  with pytest.raises(flags.Error, match="unknown config argument"):
    parse_config([f"--config={path}:nope"])


def test_fashion_mnist_autoaugment_variant_changes_only_the_augmentation():
  path = CONFIGS[0].parent / "fmnist_lt_ir100.py"
  base = parse_config([f"--config={path}"]).to_dict()
  c = parse_config([f"--config={path}:autoaugment"])
  validate_lib.validate(c, num_devices=1)
  assert (c.augment.autoaugment, c.augment.cutout) == (True, 16)
  assert {k for k in base if c.to_dict()[k] != base[k]} == {"augment"}


def test_fields_added_since_a_checkpoint_count_as_changed_only_off_their_default():
  from lgla_jax.train import resume
  from lgla_jax.train import workdir
  current = resume.config_json(parse_config([f"--config={CONFIGS[0].parent / 'fmnist_lt_ir100.py'}"]))
  old = {k: v for k, v in current.items() if k != "replicas"}  # a checkpoint older than replicas
  assert workdir.config_changes(old, current) == []
  current["replicas"]["mode"] = "sequential"
  assert workdir.config_changes(old, current) == ["replicas.mode: '<absent>' -> 'sequential'"]


@pytest.mark.parametrize("field, value, message", [
    ("few_shot_max", 100, "config.eval.few_shot_max: 100 must be below eval.many_shot_min=100"),
    ("few_shot_max", 0, "config.eval.few_shot_max: must be a positive whole number"),
    ("many_shot_min", -5, "config.eval.many_shot_min: must be a positive whole number"),
])
def test_shot_thresholds_are_checked_naming_the_field(field, value, message):
  c = config_lib.base_config()
  validate_lib.validate(c)
  assert (c.eval.many_shot_min, c.eval.few_shot_max) == (100, 20)  # the official test.py's
  c.eval[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    validate_lib.validate(c)


def test_evaluation_and_summary_read_the_thresholds_of_the_config():
  c = config_lib.base_config()
  assert evaluation.shot_thresholds(c) == (100, 20)
  c.eval.many_shot_min, c.eval.few_shot_max = 60, 10
  assert evaluation.shot_thresholds(c) == (60, 10)
  del c["eval"]  # a config saved before the section existed
  assert evaluation.shot_thresholds(c) == (100, 20)
