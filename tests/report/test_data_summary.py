"""The data summary: counts, imbalance factor, the shot split at its thresholds, the plot and
the stored class names."""

import numpy as np
import pytest

from lgla_jax import long_tail
from lgla_jax.report import data_summary

COUNTS = [500, 101, 100, 20, 19, 5]
NAMES = ["cat", "dog", "owl", "eel", "yak", "emu"]


def test_counts_imbalance_and_the_official_shot_split_at_its_edges():
  s = data_summary.summarize(COUNTS, NAMES)
  assert s["num_classes"] == 6 and s["train_images"] == sum(COUNTS)
  assert s["counts"] == dict(zip(NAMES, COUNTS))
  assert s["imbalance_factor"] == pytest.approx(500 / 5)
  # many > 100, few < 20: 100 and 20 themselves are medium (the official test.py)
  assert s["groups"] == {"many": ["cat", "dog"], "medium": ["owl", "eel"], "few": ["yak", "emu"]}
  assert s["thresholds"] == {"many_shot_min": long_tail.MANY_SHOT_MIN,
                             "few_shot_max": long_tail.FEW_SHOT_MAX}


def test_thresholds_are_configurable_and_checked():
  s = data_summary.summarize(COUNTS, NAMES, many_shot_min=19, few_shot_max=6)
  assert s["groups"] == {"many": ["cat", "dog", "owl", "eel"], "medium": ["yak"], "few": ["emu"]}
  with pytest.raises(ValueError, match="few-shot threshold"):
    data_summary.summarize(COUNTS, NAMES, many_shot_min=10, few_shot_max=50)
  with pytest.raises(ValueError, match="5 class names for 6"):
    data_summary.summarize(COUNTS, NAMES[:5])


def test_lines_name_the_classes_largest_first_and_elide_the_middle():
  text = data_summary.lines(data_summary.summarize(COUNTS, NAMES))
  assert text[0].startswith("data: 6 classes, 745 training images, imbalance factor 100.0")
  assert "many-shot (> 100 images): 2 class(es)" in text[1]
  assert [t.split()[-1] for t in text[4:]] == NAMES  # already largest first
  many = data_summary.summarize(np.arange(50, 0, -1), [f"c{i}" for i in range(50)])
  shown = data_summary.lines(many, show=3)[4:]
  assert [t.split()[-1] for t in shown] == ["c0", "c1", "c2", "...", "c47", "c48", "c49"]


def test_plot_and_class_names_written_and_read_back(tmp_path):
  s = data_summary.summarize(COUNTS, NAMES)
  plot = data_summary.write_plot(s, tmp_path / "run")
  assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  data_summary.write_class_names(NAMES, tmp_path / "run")
  assert data_summary.read_class_names(tmp_path / "run", 6) == tuple(NAMES)
  assert data_summary.read_class_names(tmp_path / "elsewhere") is None
  with pytest.raises(ValueError, match="6 class names for a model of 7"):
    data_summary.read_class_names(tmp_path / "run", 7)
  with pytest.raises(ValueError, match="line break"):
    data_summary.write_class_names(["a\nb", "c"], tmp_path / "run")
