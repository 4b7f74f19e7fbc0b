import jax.numpy as jnp
import numpy as np
import pytest

from lgla_jax.report import metrics


def test_eval_counts_match_numpy():
  rng = np.random.RandomState(0)
  b, e, c = 64, 3, 5
  logits = rng.normal(size=(b, e, c)).astype(np.float32) * 3
  output = logits.mean(1)
  labels = rng.randint(0, c, b)
  mask = np.arange(b) < 50
  got = {k: np.asarray(v) for k, v in metrics.eval_counts(
      jnp.asarray(output), jnp.asarray(logits.transpose(1, 0, 2)), jnp.asarray(labels), jnp.asarray(mask)).items()}
  pred = output.argmax(-1)
  conf = np.zeros((c, c))
  np.add.at(conf, (labels[mask], pred[mask]), 1)
  np.testing.assert_array_equal(got["confusion"], conf)
  for k in range(e):
    hits = (logits[mask, k].argmax(-1) == labels[mask])
    np.testing.assert_array_equal(got["expert_correct"][k], np.bincount(labels[mask][hits], minlength=c))
  p = np.exp(output - output.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  confidence = p.max(-1)[mask]
  bins = np.minimum((confidence * 15).astype(int), 14)
  np.testing.assert_array_equal(got["bin_count"], np.bincount(bins, minlength=15))
  np.testing.assert_allclose(got["bin_confidence"], np.bincount(bins, confidence, minlength=15), rtol=1e-5)


def test_ece_and_report():
  # Two bins: 10 samples at confidence 0.9 with 6 right, 10 at 0.5 with 5 right.
  count = np.zeros(15)
  conf = np.zeros(15)
  correct = np.zeros(15)
  count[13], conf[13], correct[13] = 10, 9.0, 6
  count[7], conf[7], correct[7] = 10, 5.0, 5
  assert metrics.expected_calibration_error(count, conf, correct) == pytest.approx(0.15)
  class_counts = [500, 300, 60, 30, 10, 5]
  confusion = np.diag([90, 80, 70, 60, 50, 40]).astype(float)
  confusion[0, 1] = 10
  confusion[1:, 0] = [20, 30, 40, 50, 60]  # 100 test images per class; errors go to the head
  counts = {"confusion": confusion, "expert_correct": np.tile(np.diag(confusion), (3, 1)),
            "bin_count": count, "bin_confidence": conf, "bin_correct": correct}
  report = metrics.report_from_counts(counts, class_counts)
  assert report["top1"] == pytest.approx(390 / 600)
  assert report["many"] == pytest.approx((0.9 + 0.8) / 2)
  assert report["medium"] == pytest.approx((0.7 + 0.6) / 2)
  assert report["few"] == pytest.approx((0.5 + 0.4) / 2)
  assert report["rarest3"] == pytest.approx((0.6 + 0.5 + 0.4) / 3)
  assert report["ece"] == pytest.approx(0.15)
  assert "ECE" in metrics.format_table(report)
  partial = metrics.accuracy_report([1, 0, 2], [2, 0, 2], [50, 30, 5])
  assert partial["per_class"] == [0.5, None, 1.0] and partial["classes_without_test_images"] == 1
  assert partial["medium"] == 0.5 and partial["many"] is None and partial["few"] == 1.0
  assert partial["rarest3"] == pytest.approx(0.75)
  with pytest.raises(ValueError, match="empty"):
    metrics.accuracy_report([0, 0], [0, 0], [10, 5])


def test_shot_thresholds_move_the_groups_and_are_recorded():
  correct, seen, class_counts = [9, 8, 7, 6, 5, 4], [10] * 6, [500, 300, 60, 30, 10, 5]
  official = metrics.accuracy_report(correct, seen, class_counts)
  assert official["shot_thresholds"] == {"many_shot_min": 100, "few_shot_max": 20}
  assert official["many"] == pytest.approx(0.85) and official["few"] == pytest.approx(0.45)
  moved = metrics.accuracy_report(correct, seen, class_counts, None, 50, 30)
  assert moved["many"] == pytest.approx((0.9 + 0.8 + 0.7) / 3)  # 60 > 50: many now
  assert moved["medium"] == pytest.approx(0.6)  # 30: 30..50
  assert moved["few"] == pytest.approx(0.45)
  assert metrics.thresholds_of(moved) == (50, 30)
  assert metrics.thresholds_of({}) == (100, 20)  # a report written before they were recorded
  assert official["top1"] == moved["top1"]
