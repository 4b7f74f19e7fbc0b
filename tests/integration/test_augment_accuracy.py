"""Host and device AutoAugment trained on a reduced Fashion-MNIST-LT protocol reach the same
accuracy (the slow tier)."""

import jax
import numpy as np
import pytest

from lgla_jax.data import readers

from helpers import config_of


@pytest.mark.slow
def test_host_and_device_autoaugment_train_to_the_same_accuracy(tmp_path):
  """The check that matters more than the pixels: a reduced Fashion-MNIST-LT protocol with
  AutoAugment + Cutout (IR 100 from 1200 images down to 12, ResNet-8, 6 epochs: far from
  chance, unlike the 2-epoch quick variant), 5 seeds (replicas) with host and with device
  augmentation; the two mean top-1 accuracies must agree within twice their standard
  error (seed noise) plus half a point. Minutes on 2 CPU cores; on a GPU the full
  protocol runs instead (tools/device_benchmark.sh)."""
  if not readers.has_fashion_mnist(readers.FASHION_MNIST_DEBIAN_DIR):
    pytest.fail("needs the Debian package dataset-fashion-mnist")
  from lgla_jax.train import loop
  from lgla_jax.train import sharding
  mesh = sharding.make_mesh(jax.devices()[:1])
  top1 = {}
  for on_device in (False, True):
    config = config_of("fmnist_lt_ir100", "quick,autoaugment,seeds5", **{
        "augment.on_device": on_device, "dataset.on_device": on_device,
        "dataset.max_per_class": 1200, "batch_size": 64, "num_epochs": 6,
        "optim.milestones": (4, 5), "log_every_steps": 50})
    report = loop.train_and_evaluate(config, str(tmp_path / str(on_device)), mesh=mesh)
    top1[on_device] = np.array([r["final"]["top1"] for r in report["replicas"]])
  host, device = top1[False], top1[True]
  stderr = np.sqrt(host.var(ddof=1) / len(host) + device.var(ddof=1) / len(device))
  print(f"top-1 host {100 * host.mean():.2f} +- {100 * host.std(ddof=1):.2f}, device "
        f"{100 * device.mean():.2f} +- {100 * device.std(ddof=1):.2f} (5 seeds each)")
  assert min(host.mean(), device.mean()) > 0.5  # a real training, not chance (10%)
  assert abs(host.mean() - device.mean()) <= 2 * stderr + 0.005, (host, device)
