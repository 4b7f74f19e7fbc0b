"""The report's per-class table and worst classes, by class name."""

import csv

import numpy as np

from lgla_jax.report import metrics, writer


def _evaluation():
  # 3 classes; class 2 has no test image, class 1 is always wrong
  confusion = np.array([[3, 1, 0], [2, 0, 0], [0, 0, 0]])
  bins = np.zeros(metrics.ECE_BINS)
  bins[-1] = 6  # every prediction made with confidence near 1
  return metrics.report_from_counts({
      "confusion": confusion, "expert_correct": np.diag(confusion)[None], "bin_count": bins,
      "bin_confidence": bins * 0.95, "bin_correct": bins * 0.5}, [50, 10, 2])


def test_per_class_table_uses_names_and_the_index_without_them(tmp_path):
  ev = _evaluation()
  rows = writer.per_class_rows(ev, [50, 10, 2], ["cat", "dog", "owl"])
  assert rows == [{"class": "cat", "train_images": 50, "test_images": 4, "accuracy": 0.75},
                  {"class": "dog", "train_images": 10, "test_images": 2, "accuracy": 0.0},
                  {"class": "owl", "train_images": 2, "test_images": 0, "accuracy": None}]
  assert [r["class"] for r in writer.per_class_rows(ev, [50, 10, 2])] == ["0", "1", "2"]
  with open(writer.write_per_class(ev, [50, 10, 2], str(tmp_path), ["cat", "dog", "owl"])) as f:
    table = list(csv.DictReader(f))
  assert table[1] == {"class": "dog", "train_images": "10", "test_images": "2", "accuracy": "0.000000"}
  assert table[2]["accuracy"] == ""


def test_worst_classes_by_name_without_the_untested():
  line = writer.worst_classes(_evaluation(), [50, 10, 2], ["cat", "dog", "owl"], k=2)
  assert line == "worst classes: dog 0.0% (n=10), cat 75.0% (n=50)"


def test_write_puts_the_table_and_named_plots_beside_the_report(tmp_path):
  ev = _evaluation()
  writer.write(dict(ev), [50, 10, 2], str(tmp_path), names=["cat", "dog", "owl"])
  assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "confusion.npy", "per_class.csv",
                                                   *writer.PLOTS}
