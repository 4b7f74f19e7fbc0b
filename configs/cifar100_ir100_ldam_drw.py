"""CIFAR-100-LT IR100 with LDAM-DRW (Cao et al., NeurIPS 2019), on the LDAM-DRW recipe.

  python -m lgla_jax.main --config=configs/cifar100_ir100_ldam_drw.py --workdir=workdirs/cifar100_ir100_ldam_drw
  python -m lgla_jax.main --config=configs/cifar100_ir100_ldam_drw.py:quick --workdir=/tmp/ldam_quick

Follows kaidic/LDAM-DRW, cifar_train.py run as its README says (--dataset cifar100
--imb_type exp --imb_factor 0.01 --loss_type LDAM --train_rule DRW) with its argument
defaults: one ResNet-32 (a single expert) with the cosine classifier (use_norm for LDAM),
s = 30; LDAMLoss with max_m 0.5; deferred re-weighting with class-balanced weights (beta
0.9999) from epoch 161 (its `epoch // 160` rule on 0-based epochs); SGD lr 0.1, momentum 0.9,
no Nesterov, weight decay 2e-4, batch 128; 200 epochs under its adjust_learning_rate
(linear warm-up over 5 epochs, x0.01 after epoch 160, x1e-4 after 180); pad-4 crop and
flip only. The same recipe is RIDE's configs/config_imbalance_cifar100_ldam_drw.json.
"""

from lgla_jax.config import recipes


def get_config(arg: str = ""):
  c = recipes.cifar_200_epoch_recipe(
      recipes.cifar_lt_config("cifar100", imbalance_factor=0.01, tau=2.5))
  c.model.num_experts = 1
  c.loss.name = "ldam"
  c.loss.reweight_epoch = 160
  c.optim.nesterov = False
  c.optim.weight_decay = 2e-4
  c.num_workers = 0  # crop and flip run vectorised in the main process
  if arg == "quick":
    recipes.shrink_to_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c
