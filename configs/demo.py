"""Demo: LGLA on a small long-tailed problem that ships with scikit-learn (no download).

  python -m lgla_jax.main --config=configs/demo.py --workdir=workdirs/demo

scikit-learn's 8x8 digits (upsampled to 16x16), 40 test images per class held out, the
training set made long-tailed with the official rule (130 images in the largest class down
to 6, imbalance factor 0.05: 438 images); a ResNet-8 with 3 experts and a cosine classifier,
LGLA with tau 2.0, 30 epochs. Prints the many / medium / few table in about half a minute
on a CPU (20 s on the 2-core development machine).
"""

from lgla_jax.config import base_config


def get_config(arg: str = ""):
  c = base_config()
  c.dataset.name = "digits"
  c.dataset.source = "sklearn"
  c.dataset.image_size = 16
  c.dataset.max_per_class = 130
  c.dataset.imbalance_factor = 0.05
  c.dataset.mean = (0.5, 0.5, 0.5)  # images in [0, 1]: roughly centred is enough here
  c.dataset.std = (0.5, 0.5, 0.5)
  c.augment.crop_padding = 2
  c.augment.flip = False  # digits are not mirror-symmetric
  c.augment.autoaugment = False
  c.augment.cutout = 0
  c.model.depth = 8
  c.loss.tau = 2.0
  c.batch_size = 32
  c.eval_batch_size = 400
  c.num_epochs = 30
  c.optim.warmup_epochs = 2
  c.optim.milestones = (20, 26)
  c.eval_every_epochs = 10
  c.checkpoint_every_epochs = 10
  c.log_every_steps = 40
  if arg == "quick":
    c.num_epochs = 2
    c.optim.milestones = (1,)
    c.optim.warmup_epochs = 1
    c.eval_every_epochs = 1
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (use '' or 'quick')")
  return c
