"""The experiment config's defaults: every field with its meaning.

Config files in ``configs/`` start from ``base_config()`` (the official CIFAR-100-LT IR100
recipe) and override what their experiment needs; ``config.recipes`` builds the
benchmarks' recipes. ``config.validate`` checks a config before anything compiles.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from lgla_jax.data.catalog import CIFAR_MEAN, CIFAR_STD

DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
  """Defaults: the official CIFAR-100-LT IR100 recipe."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init, data order and augmentation all derive from it
  c.dataset = _dataset()
  c.augment = _augment()
  c.model = _model()
  c.loss = _loss()
  c.optim = _optim()
  c.replicas = _replicas()
  c.eval = _eval()
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


def _dataset() -> ml_collections.ConfigDict:
  """The data set, its long-tailed subset and its normalisation."""
  d = ml_collections.ConfigDict()
  d.name = "cifar100"  # a name in data.catalog.DATASETS (any label with source image_folder or your own split_files; tfds:NAME with source tfds) (cifar10 | cifar100 | fashion_mnist | digits | imagenet_lt | inaturalist2018 | places_lt)
  d.source = "cifar_archive"  # cifar_archive (the original python archive) | tfds | idx | sklearn | split_files | image_folder (your own class folders: docs/own_data.md)
  d.data_dir = config_dict.placeholder(str)  # where the data lives (None: the source's default); split_files: the image root
  d.on_bad_image = "skip"  # image_folder: an unreadable image is skipped and counted (skip) | refused with its name (error)
  d.split_dir = config_dict.placeholder(str)  # split_files: folder of the split .txt files (your own: train.txt, test.txt, val.txt, classes.txt)
  d.image_key = config_dict.placeholder(str)  # tfds:NAME: the image feature (None: the builder's one image feature)
  d.label_key = config_dict.placeholder(str)  # tfds:NAME: the label feature (None: the builder's one ClassLabel)
  d.splits = config_dict.placeholder(str)  # tfds:NAME: 'train=SPLIT,test=SPLIT[,val=SPLIT]' (None: train, test, validation)
  d.download = True  # fetch missing data: the original archive / IDX files (checked by MD5); tfds: prepare it (needs TensorFlow)
  d.imbalance_factor = 0.01  # smallest/largest class (official imb_factor); 1.0 = balanced
  d.imbalance_kind = "exp"  # exp | step profile of the class counts
  d.max_per_class = config_dict.placeholder(int)  # largest class (None: the balanced set's)
  d.subset_seed = 0  # numpy seed of the official long-tail subset (rand_number)
  d.mean = CIFAR_MEAN  # per-channel mean of images in [0, 1], applied on device; (): computed from a sample of the training images (a known data set: the catalog's), config.from_data
  d.std = CIFAR_STD  # per-channel std; (): as mean
  d.image_size = 32  # side of the (square) network input (224 for ImageNet-size data); 0: measured from the training images (own data only, config.from_data)
  d.select_on = "test"  # split that picks the reported best epoch: test (official CIFAR/iNaturalist: their validation loader is the test set) | val (the data set's validation split; the test split is reported for that epoch)
  d.on_device = config_dict.placeholder(bool)  # keep the in-memory images on the devices, batches gathered there (None: auto, see docs/usage.md)
  return d


def _augment() -> ml_collections.ConfigDict:
  """The training augmentation recipe and its fields."""
  a = ml_collections.ConfigDict()
  a.recipe = "cifar"  # a name in augment.recipes.RECIPES: cifar (the fields below) | imagenet | places (per-image PIL recipes) | auto (own data: cifar up to 64 px, else imagenet)
  a.crop_padding = 4  # random crop after zero-padding by this many pixels (0: off)
  a.flip = True  # random horizontal flip
  a.rotate = 0.0  # random rotation in [-rotate, rotate] degrees after the flip (RIDE's loader: 15; 0: off)
  a.autoaugment = True  # AutoAugment, CIFAR-10 policy (as the official loader)
  a.cutout = 16  # side of the one Cutout hole in pixels (0: off)
  a.on_device = config_dict.placeholder(bool)  # recipe in the jitted step (imagenet/places: after the host's decode and crop); False: PIL/numpy on the host, the reference; None: auto (docs/usage.md)
  return a


def _model() -> ml_collections.ConfigDict:
  """The network: its name in ``models.REGISTRY`` and the fields of each."""
  m = ml_collections.ConfigDict()
  m.name = "resnet_cifar"  # a name in models.REGISTRY: resnet_cifar (ResNet-32 family) | resnet (ImageNet-size) | auto (own data: resnet_cifar up to 64 px, else resnet)
  m.arch = "resnet50"  # resnet: resnet50 | resnext50_32x4d | resnet152 | resnet26
  m.separate_experts = False  # resnet: separate layer3/layer4 per expert (Places ResNet-152)
  m.base_planes = 64  # resnet: stem width (smaller only for smoke tests)
  m.init_from = config_dict.placeholder(str)  # start from a whole trained model under the official names: an official trainer checkpoint (model_best.pth), a state_dict (.pth/.npz) or lgla_jax.export's .safetensors
  m.pretrained = config_dict.placeholder(str)  # resnet: ImageNet-pretrained weights (.npz/.pth) for the trunk; "none": random init; "required": must be given (Places-LT)
  m.bn_group_size = 0  # BatchNorm statistics over groups of this many images (0: the global batch)
  m.depth = 32  # 6n+2
  m.num_experts = 3  # E: E-1 region experts (LLA) + 1 global expert (GLA)
  m.use_norm = True  # cosine classifier (NormedLinear); False: plain linear, scale 1
  m.scale = 30.0  # cosine classifier scale s
  m.expert_layout = "official"  # resnet_cifar: official (cross-expert shortcut leak) | independent
  m.expert_widths = (32, 64)  # resnet_cifar: per-expert widths of layer2s / layer3s (RIDE's reduce_dimension: (24, 48))
  m.conv_impl = "auto"  # auto | grouped | split (same numbers; split is fast on CPU)
  return m


def _loss() -> ml_collections.ConfigDict:
  """The loss: its name in ``losses.REGISTRY`` and the fields of each."""
  l = ml_collections.ConfigDict()
  l.name = "lgla"  # a name in losses.REGISTRY: lgla | ce | class_balanced_ce | focal | logit_adjusted | ldam | ride
  l.tau = 2.5  # lgla: GLA strength; logit_adjusted: tau
  l.gamma = 1.0  # focal: focusing parameter (LDAM-DRW's value; 0 = CE)
  l.beta = 0.9999  # class_balanced_ce, and the DRW weights of ldam / ride: (1 - beta) / (1 - beta^n)
  l.max_m = 0.5  # ldam / ride: the largest margin, in cosine units (scaled by model.scale)
  l.reweight_epoch = -1  # ldam / ride: class-balanced re-weighting (DRW) for epochs > this; -1: never
  l.reweight = True  # ride: allow the re-weighting above
  l.base_diversity_temperature = 1.0  # ride: T of the diversity KL
  l.base_loss_factor = 1.0  # ride: weight of each expert's LDAM term
  l.additional_diversity_factor = -0.2  # ride: weight of the diversity KL (negative: experts diverge)
  l.reweight_factor = 0.05  # ride: per-class temperature factor after the re-weighting epoch
  return l


def _optim() -> ml_collections.ConfigDict:
  """SGD with PyTorch semantics and the per-epoch learning-rate schedule."""
  o = ml_collections.ConfigDict()
  o.lr = 0.1  # base learning rate for batch_size
  o.momentum = 0.9
  o.nesterov = True
  o.weight_decay = 2e-4  # added to the gradient of every parameter (PyTorch SGD)
  o.schedule = "warmup_multistep"  # warmup_multistep | cosine | step
  o.milestones = (320, 360)  # warmup_multistep: epochs where lr is multiplied by gamma
  o.gamma = 0.1  # warmup_multistep / step: decay factor
  o.warmup_epochs = 5  # linear warm-up from lr/3 (warmup_multistep) or lr/n (step)
  o.cosine_t_max = 0  # cosine: T_max in epochs (0: num_epochs)
  o.cosine_eta_min = 0.0  # cosine: final learning rate
  o.step_epochs = (10, 20)  # step: the two epochs of the x gamma decays
  return o


def _eval() -> ml_collections.ConfigDict:
  """How evaluation reports group the classes (the data summary uses the same)."""
  e = ml_collections.ConfigDict()
  e.many_shot_min = 100  # many-shot classes: more training images than this (official test.py: 100)
  e.few_shot_max = 20  # few-shot classes: fewer training images than this (official: 20); medium: the rest
  return e


def _replicas() -> ml_collections.ConfigDict:
  """Several seeds (and taus or learning rates) trained as one run."""
  r = ml_collections.ConfigDict()
  r.seeds = ()  # train one replica per seed in one vmapped step (empty: the single run of config.seed)
  r.tau = ()  # one loss.tau per seed (a tau sweep; empty: loss.tau for every replica)
  r.lr = ()  # one optim.lr per seed (the schedule's base rate; empty: optim.lr for every replica)
  r.shards = 1  # split the replicas over this many groups of devices (must divide both)
  r.mode = "auto"  # vmap | sequential (lax.map: one replica after the other, less memory) | unrolled (each replica's own program in one step) | auto (unrolled on CPU, vmap elsewhere)
  return r
