"""The experiment config: every field with its meaning, and validation before anything compiles.

Config files in ``configs/`` start from ``base_config()`` and override what their
experiment needs. ``validate`` rejects unknown keys (ml_collections already refuses them on
the command line) and inconsistent values with a message naming the field.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

# Normalisation constants of the official CIFAR loaders (CIFAR-10's, also used for CIFAR-100-LT).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# ImageNet-family normalisation of the official loaders; iNaturalist has its own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INATURALIST_MEAN = (0.466, 0.471, 0.380)
INATURALIST_STD = (0.195, 0.194, 0.192)

DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
  """Defaults: the official CIFAR-100-LT IR100 recipe."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init, data order and augmentation all derive from it

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "cifar100"  # a name in datasets.DATASETS (cifar10 | cifar100 | fashion_mnist | digits | imagenet_lt | inaturalist2018 | places_lt)
  c.dataset.source = "cifar_archive"  # cifar_archive (the original python archive) | tfds | idx | sklearn | split_files
  c.dataset.data_dir = config_dict.placeholder(str)  # where the data lives (None: the source's default); split_files: the image root
  c.dataset.split_dir = config_dict.placeholder(str)  # split_files: folder of the split .txt files
  c.dataset.download = True  # fetch missing data: the original archive / IDX files (checked by MD5); tfds: prepare it (needs TensorFlow)
  c.dataset.imbalance_factor = 0.01  # smallest/largest class (official imb_factor); 1.0 = balanced
  c.dataset.imbalance_kind = "exp"  # exp | step profile of the class counts
  c.dataset.max_per_class = config_dict.placeholder(int)  # largest class (None: the balanced set's)
  c.dataset.subset_seed = 0  # numpy seed of the official long-tail subset (rand_number)
  c.dataset.mean = CIFAR_MEAN  # per-channel mean of images in [0, 1], applied on device
  c.dataset.std = CIFAR_STD  # per-channel std
  c.dataset.image_size = 32  # side of the (square) network input (224 for ImageNet-size data)
  c.dataset.select_on = "test"  # split that picks the reported best epoch: test (official CIFAR/iNaturalist: their validation loader is the test set) | val (the data set's validation split; the test split is reported for that epoch)
  c.dataset.on_device = config_dict.placeholder(bool)  # keep the in-memory images on the devices, batches gathered there (None: auto, see README)

  c.augment = ml_collections.ConfigDict()
  c.augment.recipe = "cifar"  # cifar (the fields below) | imagenet | places (per-image PIL recipes)
  c.augment.crop_padding = 4  # random crop after zero-padding by this many pixels (0: off)
  c.augment.flip = True  # random horizontal flip
  c.augment.rotate = 0.0  # random rotation in [-rotate, rotate] degrees after the flip (RIDE's loader: 15; 0: off)
  c.augment.autoaugment = True  # AutoAugment, CIFAR-10 policy (as the official loader)
  c.augment.cutout = 16  # side of the one Cutout hole in pixels (0: off)
  c.augment.on_device = config_dict.placeholder(bool)  # recipe in the jitted step (imagenet/places: after the host's decode and crop); False: PIL/numpy on the host, the reference; None: auto (README)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet_cifar"  # a name in models.REGISTRY: resnet_cifar (ResNet-32 family) | resnet (ImageNet-size)
  c.model.arch = "resnet50"  # resnet: resnet50 | resnext50_32x4d | resnet152 | resnet26
  c.model.separate_experts = False  # resnet: separate layer3/layer4 per expert (Places ResNet-152)
  c.model.base_planes = 64  # resnet: stem width (smaller only for smoke tests)
  c.model.init_from = config_dict.placeholder(str)  # start from a whole trained model under the official names: an official trainer checkpoint (model_best.pth), a state_dict (.pth/.npz) or lgla_jax.export's .safetensors
  c.model.pretrained = config_dict.placeholder(str)  # resnet: ImageNet-pretrained weights (.npz/.pth) for the trunk; "none": random init; "required": must be given (Places-LT)
  c.model.bn_group_size = 0  # BatchNorm statistics over groups of this many images (0: the global batch)
  c.model.depth = 32  # 6n+2
  c.model.num_experts = 3  # E: E-1 region experts (LLA) + 1 global expert (GLA)
  c.model.use_norm = True  # cosine classifier (NormedLinear); False: plain linear, scale 1
  c.model.scale = 30.0  # cosine classifier scale s
  c.model.expert_layout = "official"  # resnet_cifar: official (cross-expert shortcut leak) | independent
  c.model.expert_widths = (32, 64)  # resnet_cifar: per-expert widths of layer2s / layer3s (RIDE's reduce_dimension: (24, 48))
  c.model.conv_impl = "auto"  # auto | grouped | split (same numbers; split is fast on CPU)

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "lgla"  # a name in losses.REGISTRY: lgla | ce | class_balanced_ce | focal | logit_adjusted | ldam | ride
  c.loss.tau = 2.5  # lgla: GLA strength; logit_adjusted: tau
  c.loss.gamma = 1.0  # focal: focusing parameter (LDAM-DRW's value; 0 = CE)
  c.loss.beta = 0.9999  # class_balanced_ce, and the DRW weights of ldam / ride: (1 - beta) / (1 - beta^n)
  c.loss.max_m = 0.5  # ldam / ride: the largest margin, in cosine units (scaled by model.scale)
  c.loss.reweight_epoch = -1  # ldam / ride: class-balanced re-weighting (DRW) for epochs > this; -1: never
  c.loss.reweight = True  # ride: allow the re-weighting above
  c.loss.base_diversity_temperature = 1.0  # ride: T of the diversity KL
  c.loss.base_loss_factor = 1.0  # ride: weight of each expert's LDAM term
  c.loss.additional_diversity_factor = -0.2  # ride: weight of the diversity KL (negative: experts diverge)
  c.loss.reweight_factor = 0.05  # ride: per-class temperature factor after the re-weighting epoch

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.1  # base learning rate for batch_size
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 2e-4  # added to the gradient of every parameter (PyTorch SGD)
  c.optim.schedule = "warmup_multistep"  # warmup_multistep | cosine | step
  c.optim.milestones = (320, 360)  # warmup_multistep: epochs where lr is multiplied by gamma
  c.optim.gamma = 0.1  # warmup_multistep / step: decay factor
  c.optim.warmup_epochs = 5  # linear warm-up from lr/3 (warmup_multistep) or lr/n (step)
  c.optim.cosine_t_max = 0  # cosine: T_max in epochs (0: num_epochs)
  c.optim.cosine_eta_min = 0.0  # cosine: final learning rate
  c.optim.step_epochs = (10, 20)  # step: the two epochs of the x gamma decays

  c.replicas = ml_collections.ConfigDict()
  c.replicas.seeds = ()  # train one replica per seed in one vmapped step (empty: the single run of config.seed)
  c.replicas.tau = ()  # one loss.tau per seed (a tau sweep; empty: loss.tau for every replica)
  c.replicas.lr = ()  # one optim.lr per seed (the schedule's base rate; empty: optim.lr for every replica)
  c.replicas.shards = 1  # split the replicas over this many groups of devices (must divide both)
  c.replicas.mode = "auto"  # vmap | sequential (lax.map: one replica after the other, less memory) | unrolled (each replica's own program in one step) | auto (unrolled on CPU, vmap elsewhere)

  c.num_epochs = 400
  c.batch_size = 128  # global batch, split over all devices
  c.drop_last_batch = False  # False: keep each epoch's incomplete last batch (padded + masked), as the official DataLoader
  c.eval_batch_size = 500  # global; the last batch is padded and masked
  c.eval_every_epochs = 20  # evaluate on the test set every N epochs (0: only at the end)
  c.checkpoint_every_epochs = 20  # save every N epochs (0: only at the end)
  c.keep_checkpoints = 2  # keep the last K checkpoints
  c.log_every_steps = 50  # console / metrics log interval
  c.num_workers = 0  # grain worker processes for augmentation (0: in the main process)
  c.steps_per_dispatch = 0  # training steps run in one device call (lax.scan); 0: auto (1 on CPU, 8 elsewhere)
  # persistent XLA cache (None: $JAX_COMPILATION_CACHE_DIR if set, else WORKDIR/compilation_cache; "": off)
  c.compilation_cache_dir = config_dict.placeholder(str)
  c.dtype = "float32"  # float32 | bfloat16 (compute dtype; parameters stay float32)
  c.xla_cpu_fast_elementwise = True  # CPU only: elementwise ops as YNNPACK fusions (faster step)
  c.resume_with_changes = False  # resume even if training settings differ from the checkpoint's (recorded in the report)
  c.report_best = False  # also report the best evaluated epoch (labelled; chosen on the test set)
  return c


# model.pretrained values that name no file.
PRETRAINED_NONE = "none"  # train from random initialisation, explicitly
PRETRAINED_REQUIRED = "required"  # the recipe starts from pretrained weights: refuse without them
PRETRAINED_HINT = (
    "the official Places-LT model always starts from the ImageNet ResNet-152 that OLTR "
    "distributes (the official code loads model/pretrained_model_places/resnet152.pth with "
    "init_weights(caffe=True): a plain state dict, conv1.weight, layer3.0.conv1.weight, ...; "
    "the trunk by name, every expert's layer3s/layer4s from layer3/layer4). Give its path: "
    "--config.model.pretrained=/path/resnet152.pth (torchvision's resnet152 weights also "
    "load: other weights, other numbers), or --config.model.pretrained=none to train from "
    "random initialisation")


def pretrained_file(model_config) -> str | None:
  """The weights file ``model.pretrained`` names, or None (not set, or "none")."""
  p = model_config.pretrained
  return None if p in (None, "", PRETRAINED_NONE, PRETRAINED_REQUIRED) else p


class ConfigError(ValueError):
  """A config field is unknown or inconsistent; the message names it."""


def _fail(field: str, problem: str):
  raise ConfigError(f"config.{field}: {problem}")


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raise ``ConfigError`` naming the first inconsistent field. Names are checked against
  the registries of the modules that own them (data sets, models, losses, schedules)."""
  from lgla_jax import datasets, input_pipeline, losses, models, optim, replicas  # jax loads here
  reference = base_config()
  _check_keys(c, reference, "")
  d = c.dataset
  if d.name not in datasets.DATASETS:
    _fail("dataset.name", f"{d.name!r} is not one of {sorted(datasets.DATASETS)}")
  allowed = datasets.DATASETS[d.name].sources
  if d.source not in allowed:
    _fail("dataset.source", f"{d.name} can be read from {allowed}, not {d.source!r}")
  if not 0 < d.imbalance_factor <= 1:
    _fail("dataset.imbalance_factor", f"must be in (0, 1] (0.01 = IR100), got {d.imbalance_factor}")
  if d.imbalance_kind not in ("exp", "step"):
    _fail("dataset.imbalance_kind", f"must be 'exp' or 'step', got {d.imbalance_kind!r}")
  if len(d.mean) != 3 or len(d.std) != 3 or min(d.std) <= 0:
    _fail("dataset.mean/std", "need three values each, std positive")
  if d.select_on not in ("test", "val"):
    _fail("dataset.select_on", f"must be 'test' or 'val', got {d.select_on!r}")
  if d.select_on == "val" and datasets.DATASETS[d.name].val_file is None:
    _fail("dataset.select_on", f"{d.name} has no validation split (the official code selects "
          f"on its test set): use 'test'")
  if d.select_on == "val" and c.report_best:
    _fail("report_best", "chooses on the test set; with dataset.select_on='val' the report "
          "already has the validation-selected epoch: set it to False")
  if d.select_on == "val" and not c.eval_every_epochs:
    _fail("dataset.select_on", "'val' selects among evaluated epochs: set eval_every_epochs >= 1")
  if c.augment.recipe not in input_pipeline.RECIPES:
    _fail("augment.recipe", f"{c.augment.recipe!r} is not one of {input_pipeline.RECIPES}")
  if (c.augment.recipe == "cifar") != (d.source != "split_files"):
    _fail("augment.recipe", f"{c.augment.recipe!r} does not fit dataset.source={d.source!r}: "
          f"the cifar recipe works on in-memory images, imagenet/places on image files")
  if d.on_device and d.source == "split_files":
    _fail("dataset.on_device", "image files are decoded on the host; only in-memory data sets "
          "(cifar, fashion_mnist, digits) can live on the devices")
  if d.on_device and c.augment.on_device is False:
    _fail("augment.on_device", "False augments on the host, which needs the images there: set "
          "dataset.on_device=False too, or augment.on_device=True")
  if not 0 <= c.augment.rotate < 180:
    _fail("augment.rotate", f"must be in [0, 180) degrees, got {c.augment.rotate}")
  m = c.model
  if m.pretrained == PRETRAINED_REQUIRED and not m.init_from:  # a whole model has the trunk
    _fail("model.pretrained", PRETRAINED_HINT)
  if m.init_from and pretrained_file(m):
    _fail("model.init_from", "a whole model replaces the pretrained trunk of model.pretrained: "
          "set only one of them")
  for field, problem in models.problems(m):
    _fail(field, problem)
  if m.bn_group_size < 0 or (m.bn_group_size and c.batch_size % m.bn_group_size):
    _fail("model.bn_group_size", f"must be 0 or divide batch_size={c.batch_size}, got {m.bn_group_size}")
  for field, problem in losses.problems(c.loss, m.num_experts, m.use_norm):
    _fail(field, problem)
  o = c.optim
  if o.schedule not in optim.SCHEDULES:
    _fail("optim.schedule", f"{o.schedule!r} is not one of {optim.SCHEDULES}")
  if o.lr <= 0:
    _fail("optim.lr", f"must be positive, got {o.lr}")
  if list(o.milestones) != sorted(o.milestones):
    _fail("optim.milestones", f"must be increasing, got {tuple(o.milestones)}")
  if o.nesterov and o.momentum <= 0:
    _fail("optim.nesterov", "Nesterov needs optim.momentum > 0")
  for field in ("momentum", "weight_decay", "warmup_epochs", "cosine_t_max", "cosine_eta_min"):
    if o[field] < 0:
      _fail(f"optim.{field}", f"must be >= 0, got {o[field]}")
  if o.gamma <= 0:
    _fail("optim.gamma", f"must be positive, got {o.gamma}")
  if len(o.step_epochs) != 2 or not 0 <= o.step_epochs[0] <= o.step_epochs[1]:
    _fail("optim.step_epochs", f"two epochs, in order, of the step schedule's decays; got "
          f"{tuple(o.step_epochs)}")
  for field in ("num_epochs", "batch_size", "eval_batch_size", "log_every_steps"):
    if c[field] <= 0:
      _fail(field, f"must be positive, got {c[field]}")
  for field in ("eval_every_epochs", "checkpoint_every_epochs", "num_workers", "steps_per_dispatch"):
    if c[field] < 0:
      _fail(field, f"must be >= 0, got {c[field]}")
  if c.keep_checkpoints < 1:
    _fail("keep_checkpoints", f"must be >= 1, got {c.keep_checkpoints}")
  if c.dtype not in DTYPES:
    _fail("dtype", f"must be one of {DTYPES}, got {c.dtype!r}")
  for field, problem in replicas.problems(c, num_devices):
    _fail(field, problem)
  if num_devices:
    groups = c.replicas.shards if c.replicas.seeds else 1
    per_group = num_devices // groups  # every replica's batch is split over its group
    for field in ("batch_size", "eval_batch_size"):
      if c[field] % per_group:
        _fail(field, f"{c[field]} is not divisible by the {per_group} devices "
              f"{'of each replica group' if groups > 1 else ''}".rstrip())


def _check_keys(c, reference, prefix):
  for key in c.keys():
    if key not in reference:
      near = [k for k in reference.keys() if k[:3] == key[:3]]
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      _fail(prefix + key, f"unknown field{hint}")
    if isinstance(c[key], ml_collections.ConfigDict):
      _check_keys(c[key], reference[key], prefix + key + ".")


def cifar_lt_config(name: str, imbalance_factor: float, tau: float, arg: str = ""):
  """The official CIFAR-LT recipe for ``name`` (cifar10 | cifar100); ``arg='quick'`` gives a
  tiny smoke variant (``shrink_to_quick``)."""
  c = base_config()
  c.dataset.name = name
  c.dataset.imbalance_factor = imbalance_factor
  c.loss.tau = tau
  c.num_workers = 4  # AutoAugment runs in PIL per image: spread it over processes
  if arg == "quick":
    shrink_to_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c


def cifar_200_epoch_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The schedule and augmentation LDAM-DRW and RIDE share on CIFAR-LT: 200 epochs, linear
  warm-up over 5, x0.01 at epoch 160 and again at 180 (their CustomLR /
  adjust_learning_rate), pad-4 crop and flip without AutoAugment or Cutout."""
  c.num_epochs = 200
  c.optim.schedule = "step"
  c.optim.step_epochs = (160, 180)
  c.optim.gamma = 0.01
  c.optim.warmup_epochs = 5
  c.augment.autoaugment = False
  c.augment.cutout = 0
  return c


def shrink_to_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A CIFAR config's smoke variant: depth 8, 100 images in the largest class, 2 epochs
  (the schedule's decays and any re-weighting fall at epoch 1), batch 16."""
  c.num_workers = 0
  c.model.depth = 8
  c.dataset.max_per_class = 100  # IR100 keeps >= 1 image in the rarest class
  c.num_epochs = 2
  c.optim.warmup_epochs = 1
  c.optim.milestones = (1,)
  c.optim.step_epochs = (1, 2)
  if c.loss.reweight_epoch != -1:
    c.loss.reweight_epoch = 1  # the second epoch re-weights
  c.batch_size = 16
  c.eval_batch_size = 64
  c.log_every_steps = 5
  return c


def large_lt_config(dataset: str, arch: str, *, tau: float, batch_size: int, lr: float,
                    weight_decay: float, num_epochs: int, schedule: str, official_gpus: int,
                    arg: str = "", **extra):
  """The official recipe of an ImageNet-size benchmark (ImageNet-LT, iNaturalist 2018,
  Places-LT); ``arg='quick'`` shrinks it to a smoke run (64x64 images, 1/8-width network,
  batch 8, one epoch). The official runs used DataParallel on ``official_gpus`` GPUs, so
  BatchNorm saw ``batch_size / official_gpus`` images: that is the default grouping."""
  c = base_config()
  c.dataset.name = dataset
  c.dataset.source = "split_files"
  c.dataset.imbalance_factor = 1.0  # the split files are long-tailed already
  c.dataset.image_size = 224
  inat = dataset == "inaturalist2018"
  c.dataset.mean = INATURALIST_MEAN if inat else IMAGENET_MEAN
  c.dataset.std = INATURALIST_STD if inat else IMAGENET_STD
  c.augment.recipe = "places" if dataset == "places_lt" else "imagenet"
  c.model.name = "resnet"
  c.model.arch = arch
  c.model.bn_group_size = batch_size // official_gpus
  c.loss.tau = tau
  c.batch_size = batch_size
  c.eval_batch_size = 500
  c.optim.lr = lr
  c.optim.weight_decay = weight_decay
  c.optim.schedule = schedule
  c.num_epochs = num_epochs
  c.num_workers = 12
  from lgla_jax import datasets  # numpy only
  if datasets.DATASETS[dataset].val_file:  # the official trainer validates every epoch
    c.dataset.select_on = "val"
    c.eval_every_epochs = 1
  else:
    c.eval_every_epochs = 10
  c.checkpoint_every_epochs = 5
  c.log_every_steps = 100
  for key, value in extra.items():
    section, _, field = key.partition("__")
    c[section][field] = value
  if arg == "quick":
    c.dataset.image_size = 64
    c.model.base_planes = 16 if arch.startswith("resnext") else 8  # ResNeXt needs 16 for 32 groups
    c.batch_size = 8
    c.model.bn_group_size = 8 // min(official_gpus, 4)  # still grouped, as the real recipe
    if c.model.pretrained == PRETRAINED_REQUIRED:
      c.model.pretrained = PRETRAINED_NONE  # a smoke run from random weights, said so
    c.eval_batch_size = 8
    c.num_epochs = 1
    c.num_workers = 0
    c.optim.warmup_epochs = 0
    c.log_every_steps = 1
    c.eval_every_epochs = 1
    c.checkpoint_every_epochs = 1
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c
