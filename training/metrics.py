"""Classification metrics over probability arrays. Pure numpy, no I/O."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(
    y_true: np.ndarray, y_pred: np.ndarray, classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Rows: true class, columns: predicted class (sums of `weights`, else counts)."""
    if weights is None:
        m = np.zeros((classes, classes), dtype=np.int64)
        np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
        return m
    w = np.zeros((classes, classes), dtype=np.float64)
    np.add.at(w, (np.asarray(y_true), np.asarray(y_pred)), np.asarray(weights, np.float64))
    return w


def macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, classes: int, weights: np.ndarray | None = None
) -> float:
    """Mean per-class F1; with `weights`, over a weighted confusion matrix (source-balanced
    validation)."""
    return float(np.mean(_prf(confusion(y_true, y_pred, classes, weights))[2]))


def _prf(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(m).astype(np.float64)
    predicted = m.sum(axis=0)
    actual = m.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence, equal-width bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total)


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per-bin mean confidence, accuracy and count (for the reliability plot)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            rows.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "confidence": float(conf[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows


def summarize(
    probs: np.ndarray, y_true: np.ndarray, labels: Sequence[str], *, bins: int = 15
) -> dict[str, Any]:
    """accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, ECE, NLL."""
    y_pred = probs.argmax(axis=1)
    m = confusion(y_true, y_pred, len(labels))
    precision, recall, f1 = _prf(m)
    nll = -np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, None)))
    return {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": float(f1.mean()),
        "ece": ece(probs, y_true, bins),
        "nll": float(nll),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(m[i].sum()),
            }
            for i, label in enumerate(labels)
        },
        "confusion": m.tolist(),
    }
