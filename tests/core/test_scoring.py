from __future__ import annotations

import numpy as np
import pytest

from wastesort import scoring


def test_dequantize_is_scale_times_offset():
    raw = np.array([[-128, 0, 16, 127]], dtype=np.int8)
    out = scoring.dequantize(raw, 0.5, 16)
    assert out.tolist() == [[-72.0, -8.0, 0.0, 55.5]]
    assert scoring.dequantize(np.array([1.5], np.float32), 0.5, 16).tolist() == [1.5]


@pytest.mark.parametrize(
    ("dtype", "scale", "zp", "expected"),
    [
        ("uint8", 0.0, 0, [0, 128, 255]),
        ("uint8", 1.0, 0, [0, 128, 255]),
        ("int8", 1.0, -128, [-128, 0, 127]),
    ],
)
def test_quantize_pixels(dtype, scale, zp, expected):
    pixels = np.array([0, 128, 255], dtype=np.uint8)
    out = scoring.quantize(pixels, dtype, scale, zp)
    assert out.dtype == np.dtype(dtype)
    assert out.tolist() == expected


def test_softmax_sums_to_one_and_temperature_flattens():
    logits = np.array([[2.0, 1.0, 0.1], [1000.0, 0.0, -1000.0]])
    probs = scoring.softmax(logits)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.isfinite(probs).all()
    hot, cool = scoring.softmax(logits[0], 1.0), scoring.softmax(logits[0], 2.0)
    assert cool.max() < hot.max()
    assert np.argmax(cool) == np.argmax(hot)


def test_calibrate_probabilities_renormalises_and_applies_temperature():
    probs = np.array([0.7, 0.2, 0.1])
    assert np.allclose(scoring.calibrate(probs, kind="probabilities"), probs)
    flatter = scoring.calibrate(probs, kind="probabilities", temperature=2.0)
    assert flatter.sum() == pytest.approx(1.0)
    assert flatter[0] < 0.7


def test_decide_uncertain_below_threshold():
    labels = ["a", "b", "c"]
    probs = np.array([0.2, 0.5, 0.3])
    assert scoring.decide(probs, labels, 0.4) == ("b", 0.5, "b")
    assert scoring.decide(probs, labels, 0.6) == ("b", 0.5, scoring.UNCERTAIN)


def test_ranked_orders_and_cuts():
    probs = np.array([0.1, 0.6, 0.3])
    assert list(scoring.ranked(probs, ["a", "b", "c"])) == ["b", "c", "a"]
    assert scoring.ranked(probs, ["a", "b", "c"], top_k=1) == {"b": 0.6}
