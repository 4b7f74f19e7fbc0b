"""``lgla_jax.data_summary``: the shot thresholds default to the config's (``config.eval``),
given ones are checked as the config's are, and fields left to the data are measured first."""

import numpy as np
import pytest
from PIL import Image

from lgla_jax import data_summary, errors
from lgla_jax.config import overrides
from helpers import ROOT, config_of


def test_thresholds_default_to_the_configs_and_are_checked(capsys):
  config = config_of("demo", "quick")
  assert data_summary.summarize_config(config)["thresholds"] == {"many_shot_min": 100,
                                                                 "few_shot_max": 20}
  config.eval.many_shot_min, config.eval.few_shot_max = 50, 10
  assert data_summary.summarize_config(config)["thresholds"] == {"many_shot_min": 50,
                                                                 "few_shot_max": 10}
  given = data_summary.summarize_config(config, few_shot_max=5)  # a flag wins over the config
  assert given["thresholds"] == {"many_shot_min": 50, "few_shot_max": 5}
  assert "few-shot (< 5 images)" in capsys.readouterr().out
  with pytest.raises(errors.ConfigError, match="config.eval.few_shot_max: 60 must be below"):
    data_summary.summarize_config(config, few_shot_max=60)


def test_an_image_folder_is_measured_before_it_is_read(tmp_path, capsys):
  for split in ("train", "test"):
    for cls, n in (("a", 4), ("b", 2)):
      (tmp_path / split / cls).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")

  config = overrides.load(f"{ROOT}/configs/image_folder.py", {"dataset.data_dir": str(tmp_path)})
  summary = data_summary.summarize_config(config)
  assert summary["counts"] == {"a": 4, "b": 2}
  out = capsys.readouterr().out
  assert "image_size 20 (median larger side 20 px of 6 sampled" in out
  assert "augment.recipe 'cifar', model.name 'resnet_cifar'" in out
