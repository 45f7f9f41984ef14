"""Weights by source and class: a partial source changes which photos teach a class, not how
often the model expects it; validation counts every source alike."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibrate
from training.config import CalibrateConfig
from training.metrics import macro_f1
from training.weights import balanced, class_weights, sample_weights


@pytest.mark.parametrize("mode", ["none", "balanced", "sqrt"])
def test_one_source_weighs_as_it_always_did(mode: str):
    y = np.array([0] * 30 + [1] * 10 + [2] * 5)
    got = sample_weights(y, ["trashnet"] * len(y), classes=3, mode=mode)
    np.testing.assert_array_equal(got, class_weights(y, 3, mode)[y])


@pytest.mark.parametrize("mode", ["none", "balanced", "sqrt"])
def test_a_partial_source_leaves_the_class_prior_as_the_complete_source_sets_it(mode: str):
    y_main = np.array([0] * 30 + [1] * 10 + [2] * 5)
    y_cans = np.array([1] * 40 + [2] * 60)  # a big source of two classes only
    y = np.concatenate([y_main, y_cans])
    sources = ["main"] * len(y_main) + ["cans"] * len(y_cans)
    w = sample_weights(y, sources, classes=3, mode=mode)
    assert w.mean() == pytest.approx(1.0)
    prior = np.bincount(y, weights=w, minlength=3) / w.sum()
    alone = class_weights(y_main, 3, mode)[y_main]
    expected = np.bincount(y_main, weights=alone, minlength=3) / alone.sum()
    np.testing.assert_allclose(prior, expected)
    names = np.array(sources)
    for c in (1, 2):  # the class's weight is shared equally by the two sources holding it
        main = w[(y == c) & (names == "main")].sum()
        cans = w[(y == c) & (names == "cans")].sum()
        assert main == pytest.approx(cans)
    shared = sample_weights(y, sources, classes=3, mode=mode, shares={"cans": 3})
    c = 2
    main = shared[(y == c) & (names == "main")].sum()
    assert shared[(y == c) & (names == "cans")].sum() == pytest.approx(3 * main)


def test_validation_counts_every_source_alike():
    assert balanced(["a"] * 5) is None
    w = balanced(["a"] * 30 + ["b"] * 10)
    assert w.mean() == pytest.approx(1.0)
    assert w[:30].sum() == pytest.approx(w[30:].sum())


def test_weighted_calibration_and_early_stopping_figures():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 3 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ones = np.ones(200)
    assert calibrate.fit_temperature(logits, y, ones) == calibrate.fit_temperature(logits, y)
    plain = calibrate.uncertain_threshold(probs, y, probs, y, CalibrateConfig())
    same = calibrate.uncertain_threshold(probs, y, probs, y, CalibrateConfig(), val_weights=ones)
    assert plain["threshold"] == same["threshold"]
    pred = probs.argmax(axis=1)
    assert macro_f1(y, pred, 3, weights=ones) == pytest.approx(macro_f1(y, pred, 3))
    wrong = pred != y  # weigh the mistakes up: every weighted figure gets worse
    heavy = np.where(wrong, 10.0, 1.0)
    assert macro_f1(y, pred, 3, weights=heavy) < macro_f1(y, pred, 3)
    shifted = calibrate.uncertain_threshold(
        probs, y, probs, y, CalibrateConfig(target_accuracy=0.9), val_weights=heavy
    )
    assert shifted["val_accuracy_decided"] >= 0.9 or shifted["threshold"] == 0.9
