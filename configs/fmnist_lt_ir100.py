"""Fashion-MNIST-LT IR100: the offline benchmark protocol (real data, runs on a CPU).

  python -m lgla_jax.main --config=configs/fmnist_lt_ir100.py --workdir=workdirs/fmnist_lt_ir100
  python -m lgla_jax.main --config=configs/fmnist_lt_ir100.py:quick --workdir=/tmp/fmnist_quick
  python -m lgla_jax.main --config=configs/fmnist_lt_ir100.py:ride --workdir=workdirs/fmnist_ride

Fashion-MNIST train made long-tailed with the official rule (imbalanced_counts(10, 6000,
0.01), subset seed 0: 14,886 images), 28x28 zero-padded to 32x32 and repeated to 3
channels; pad-4 crop + flip only; ResNet-32, 3 experts, LGLA tau 3.0; SGD 0.1 Nesterov,
wd 2e-4, batch 128; 12 epochs, 2 warm-up epochs, x0.1 at epochs 9 and 11. The official
PyTorch code under this protocol (seed 123, CPU): top-1 88.46%, many 86.58%, medium 96.0%,
rarest-3 95.6%.

The argument is a comma-separated list: ``quick`` (a tiny smoke run) and/or one loss of
the baseline table, which changes only the loss (same network, data, schedule): ``ce``,
``class_balanced_ce`` (beta 0.9999), ``focal`` (gamma 1), ``logit_adjusted`` (tau 1),
``ldam`` (LDAM-DRW: re-weighting from the first lr milestone, epoch 10), ``ride`` (RIDE's
CIFAR factor -0.45, re-weighting from epoch 10), ``lgla`` (the default); ``autoaugment``
adds the CIFAR recipe's AutoAugment + Cutout 16 (to compare host and device augmentation
on real data: ``--config.augment.on_device=False`` runs it on the host); ``seeds5`` trains
5 replicas (seeds 0-4) in one run, ``tau_sweep`` 5 replicas of seed 0 with tau 2.0 to 4.0
(``lgla_jax.replicas``; with a loss that reads tau: lgla, logit_adjusted).
"""

from lgla_jax.config import base_config

BASELINES = {  # the loss fields each baseline of the table sets
    "lgla": {},
    "ce": {},
    "class_balanced_ce": {"beta": 0.9999},
    "focal": {"gamma": 1.0},
    "logit_adjusted": {"tau": 1.0},
    "ldam": {"max_m": 0.5, "reweight_epoch": 9},  # DRW from the first milestone on
    "ride": {"reweight_epoch": 9, "additional_diversity_factor": -0.45},
}

REPLICAS = {  # (replicas.seeds, replicas.tau) of the replica variants
    "seeds5": ((0, 1, 2, 3, 4), ()),
    "tau_sweep": ((0,) * 5, (2.0, 2.5, 3.0, 3.5, 4.0)),
}


def get_config(arg: str = ""):
  c = base_config()
  c.dataset.name = "fashion_mnist"
  c.dataset.source = "idx"  # the IDX files of the Debian package dataset-fashion-mnist
  c.dataset.imbalance_factor = 0.01
  c.dataset.mean = (0.2860, 0.2860, 0.2860)
  c.dataset.std = (0.3530, 0.3530, 0.3530)
  c.augment.autoaugment = False
  c.augment.cutout = 0
  c.loss.tau = 3.0
  c.num_epochs = 12
  c.optim.warmup_epochs = 2
  c.optim.milestones = (9, 11)
  c.eval_every_epochs = 0  # evaluate once, at the end
  c.checkpoint_every_epochs = 1
  c.eval_batch_size = 500
  tokens = [t for t in arg.split(",") if t]
  for token in tokens:
    if token in BASELINES:
      c.loss.name = token
      for field, value in BASELINES[token].items():
        c.loss[field] = value
    elif token == "autoaugment":
      c.augment.autoaugment = True
      c.augment.cutout = 16
    elif token in REPLICAS:
      c.replicas.seeds, c.replicas.tau = REPLICAS[token]
    elif token != "quick":
      raise ValueError(f"unknown config argument {token!r} (use quick, autoaugment, "
                       f"{' or '.join(REPLICAS)} and/or one of {sorted(BASELINES)}, "
                       f"comma-separated)")
  if "quick" in tokens:  # a tiny smoke run: 2 short epochs on a small ResNet
    c.model.depth = 8
    c.num_epochs = 2
    c.optim.warmup_epochs = 1
    c.optim.milestones = (1,)
    if c.loss.reweight_epoch != -1:
      c.loss.reweight_epoch = 1
    c.dataset.max_per_class = 120
    c.batch_size = 32
    c.eval_batch_size = 400
    c.log_every_steps = 10
  return c
