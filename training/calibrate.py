"""Temperature scaling and the `uncertain` threshold, both fit on the validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wastesort.scoring import softmax


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Scores from a classifier at temperature 1 -> logits up to a per-row constant, which
    softmax ignores; enough to fit a temperature through the serving code."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature).astype(np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (golden-section search over log T)."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, y, np.exp(a)), nll(logits, y, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, y, np.exp(b))
    return float(round(np.exp((lo + hi) / 2), 4))


@dataclass(frozen=True)
class Threshold:
    threshold: float
    coverage: float
    """Share of validation images at or above the threshold (decided, not `uncertain`)."""
    accuracy_covered: float
    accuracy_all: float


def choose_threshold(
    probs: np.ndarray, y: np.ndarray, *, target_accuracy: float, max_threshold: float
) -> Threshold:
    """The lowest confidence threshold at which the decided images reach `target_accuracy`.

    A bin falls back to its safe default below the threshold, so the lowest threshold that
    meets the target keeps the most images sorted. Capped at `max_threshold`.
    """
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    chosen = max_threshold
    for t in np.unique(np.concatenate([[0.0], np.round(conf, 4)])):
        if t > max_threshold:
            break
        mask = conf >= t
        if mask.any() and correct[mask].mean() >= target_accuracy:
            chosen = float(t)
            break
    mask = conf >= chosen
    return Threshold(
        threshold=round(chosen, 4),
        coverage=float(mask.mean()),
        accuracy_covered=float(correct[mask].mean()) if mask.any() else 0.0,
        accuracy_all=float(correct.mean()),
    )


def tradeoff(probs: np.ndarray, y: np.ndarray, thresholds: list[float]) -> list[dict[str, float]]:
    """Coverage and accuracy of the decided images at several thresholds (for the report)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    rows = []
    for t in thresholds:
        mask = conf >= t
        rows.append(
            {
                "threshold": t,
                "coverage": float(mask.mean()),
                "accuracy": float(correct[mask].mean()) if mask.any() else 0.0,
            }
        )
    return rows
