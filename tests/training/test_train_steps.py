"""The pieces the pipeline puts in order, on small arrays: one decision rule for the
uncertain threshold, golden picking and the tracked run's ending."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.calibrate import choose_threshold, coverage, tradeoff, uncertain_threshold
from training.config import CalibrateConfig, MlflowConfig
from training.publish import pick_golden

PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]], dtype=np.float32)
Y = np.array([0, 1, 1, 1])


def test_a_confidence_at_the_threshold_is_decided():
    # Serving decides at confidence >= threshold; calibration must count the same images.
    assert coverage(PROBS, Y, float(PROBS[2].max())) == (0.5, 1.0)
    assert coverage(PROBS, Y, 0.95) == (0.0, 0.0)
    rows = tradeoff(PROBS, Y, [0.0, 0.7])
    assert rows == [
        {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.75},
        {"threshold": 0.7, "coverage": 0.5, "accuracy": 1.0},
    ]


def test_the_threshold_is_the_lowest_that_reaches_the_target():
    thr = choose_threshold(PROBS, Y, target_accuracy=1.0, max_threshold=0.9)
    assert thr.threshold == pytest.approx(0.7)
    assert (thr.coverage, thr.accuracy_covered, thr.accuracy_all) == (0.5, 1.0, 0.75)
    capped = choose_threshold(PROBS, Y, target_accuracy=1.0, max_threshold=0.65)
    assert capped.threshold == 0.65


def test_uncertain_section_reports_validation_and_test():
    section = uncertain_threshold(PROBS, Y, PROBS[:2], Y[:2], CalibrateConfig(target_accuracy=1))
    assert section["threshold"] == pytest.approx(0.7)
    assert (section["test_coverage"], section["test_accuracy_decided"]) == (0.5, 1.0)
    assert [r["threshold"] for r in section["tradeoff_val"]][:2] == [0.0, 0.4]


def test_golden_images_clear_the_threshold_by_the_margin():
    probs = np.array([[0.95, 0.05], [0.75, 0.25], [0.1, 0.9], [0.2, 0.8]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    # 0.75 is below 0.7 + 0.1, so class 0 keeps only its clear image; class 1 has two.
    assert pick_golden(probs, y, per_class=1, threshold=0.7) == [0, 2]
    assert sorted(pick_golden(probs, y, per_class=2, threshold=0.7)) == [0, 1, 2, 3]


def test_a_tracked_run_that_raises_ends_failed(tmp_path: Path):
    import mlflow

    from training.tracking import Tracker

    cfg = MlflowConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
        artifact_location=str(tmp_path / "mlruns"),
    )
    with pytest.raises(RuntimeError, match="boom"), Tracker(cfg, "fails") as tracker:
        raise RuntimeError("boom")
    with Tracker(cfg, "works") as done:
        pass
    client = mlflow.MlflowClient(cfg.tracking_uri)
    assert client.get_run(tracker.run_id).info.status == "FAILED"
    assert client.get_run(done.run_id).info.status == "FINISHED"
