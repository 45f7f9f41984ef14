"""The training batches: class weights, mixup and feature noise, all seeded."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from training.config import TrainConfig
from training.train import Batches, class_weights


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 10 + [2] * 4)
    return rng.normal(2.0, 1.0, size=(len(y), 3, 2, 5)).astype(np.float32), y


def _all(batches: Batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [batches[i] for i in range(len(batches))]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]


def test_plain_batches_cover_every_sample_once_with_its_weight():
    x, y = _data()
    batches = Batches(x, y, classes=3, train=TrainConfig(batch_size=8, class_weights="balanced"))
    assert len(batches) == 6
    bx, bt, bw = _all(batches)
    order = batches.order
    np.testing.assert_array_equal(bx, x[order])
    np.testing.assert_array_equal(bt.argmax(1), y[order])
    np.testing.assert_allclose(bw, class_weights(y, 3, "balanced")[y[order]])
    # weighted, every class counts the same
    assert np.allclose(np.bincount(y, weights=class_weights(y, 3, "balanced")[y]), len(y) / 3)


def test_each_epoch_reshuffles_and_the_seed_fixes_the_order():
    x, y = _data()
    cfg = TrainConfig(batch_size=8)
    a, b = Batches(x, y, classes=3, train=cfg), Batches(x, y, classes=3, train=cfg)
    first = a.order.copy()
    np.testing.assert_array_equal(first, b.order)
    a.on_epoch_end()
    assert not np.array_equal(first, a.order)
    assert sorted(a.order) == list(range(len(y)))


def test_mixup_blends_inputs_labels_and_weights_consistently():
    x, y = _data()
    batches = Batches(x, y, classes=3, train=TrainConfig(batch_size=44, mixup=0.4))
    bx, bt, bw = batches[0]
    assert np.allclose(bt.sum(1), 1.0)
    assert (bt.max(1) < 1).any()  # pairs of different classes give blended labels
    xs, ts, ws = x[batches.order], np.eye(3)[y[batches.order]], batches.weights[batches.order]
    assert np.mean([not np.allclose(bx[k], xs[k]) for k in range(len(bx))]) > 0.8
    # each row is ONE blend lam * own + (1 - lam) * partner, of inputs, labels and weights alike
    for k in range(len(bx)):
        assert any(
            _blend_of(bx[k], xs[k], xs[j], (bt[k], ts[k], ts[j]), (bw[k], ws[k], ws[j]))
            for j in range(len(xs))
        ), k
    np.testing.assert_array_equal(batches[0][0], bx)  # same batch, same blend


def _blend_of(mixed: np.ndarray, a: np.ndarray, b: np.ndarray, *others: tuple) -> bool:
    d = (a - b).ravel()
    lam = 1.0 if not d.any() else float(np.dot((mixed - b).ravel(), d) / np.dot(d, d))
    if not (-1e-4 <= lam <= 1 + 1e-4):
        return False
    return np.allclose(mixed, lam * a + (1 - lam) * b, atol=1e-4) and all(
        np.allclose(m, lam * p + (1 - lam) * q, atol=1e-4) for m, p, q in others
    )


def test_feature_noise_is_scaled_to_the_activations():
    x, y = _data()
    plain = Batches(x, y, classes=3, train=TrainConfig(batch_size=44))[0][0]
    noisy = Batches(x, y, classes=3, train=TrainConfig(batch_size=44, feature_noise=0.1))[0][0]
    rms = np.sqrt(np.mean(np.square(x)))
    assert np.std(noisy - plain) == pytest.approx(0.1 * rms, rel=0.1)
