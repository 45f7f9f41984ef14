"""Temperature scaling and the `uncertain` threshold, both fit on the validation split.

With several train sources the validation photos carry weights that make every source count
alike (`training.weights.balanced`), so a big source does not set the confidence scale alone.

The threshold has two rules (`calibrate.threshold_rule`): `pooled`, the lowest threshold at which
the decided validation photos reach a target accuracy; and `per_source`, the lowest at which no
source's share of confidently-wrong answers (decided and wrong) is above a target. A pooled figure
can meet its target while one source, the one unlike the rest, is confidently wrong far more
often; the per-source rule holds the worst source to it, and the report says what coverage that
costs against the pooled rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.config import CalibrateConfig
from wastesort.scoring import is_confident, softmax

TRADEOFF_THRESHOLDS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Where the report shows what a threshold would cost, beside the one chosen."""


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Scores from a classifier at temperature 1 -> logits up to a per-row constant, which
    softmax ignores; enough to fit a temperature through the serving code."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None))


def nll(
    logits: np.ndarray, y: np.ndarray, temperature: float, weights: np.ndarray | None = None
) -> float:
    p = softmax(logits, temperature).astype(np.float64)
    return float(
        -np.average(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)), weights=weights)
    )


def fit_temperature(logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The temperature minimising validation NLL (golden-section search over log T)."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, y, np.exp(a), weights), nll(logits, y, np.exp(b), weights)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, y, np.exp(a), weights)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, y, np.exp(b), weights)
    return float(round(np.exp((lo + hi) / 2), 4))


@dataclass(frozen=True)
class Threshold:
    threshold: float
    coverage: float
    """Share of validation images at or above the threshold (decided, not `uncertain`)."""
    accuracy_covered: float
    accuracy_all: float


def _mean(values: np.ndarray, weights: np.ndarray | None) -> float:
    return float(np.average(values, weights=weights))


def coverage(
    probs: np.ndarray, y: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """(share of images decided at `threshold`, accuracy of those decided; 0 when none are).

    The same rule as serving (`is_confident`), so the figures describe what a bin will do.
    """
    decided = is_confident(probs.max(axis=1), threshold)
    correct = probs.argmax(axis=1) == y
    if not decided.any():
        return _mean(decided, weights), 0.0
    w = None if weights is None else weights[decided]
    return _mean(decided, weights), _mean(correct[decided], w)


def choose_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    target_accuracy: float,
    max_threshold: float,
    weights: np.ndarray | None = None,
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
        decided = is_confident(conf, t)
        w = None if weights is None else weights[decided]
        if decided.any() and _mean(correct[decided], w) >= target_accuracy:
            chosen = float(t)
            break
    share, accuracy = coverage(probs, y, chosen, weights)
    return Threshold(
        threshold=round(chosen, 4),
        coverage=share,
        accuracy_covered=accuracy,
        accuracy_all=_mean(correct, weights),
    )


def tradeoff(
    probs: np.ndarray, y: np.ndarray, thresholds: list[float], weights: np.ndarray | None = None
) -> list[dict[str, float]]:
    """Coverage and accuracy of the decided images at several thresholds (for the report)."""
    rows = []
    for t in thresholds:
        share, accuracy = coverage(probs, y, t, weights)
        rows.append({"threshold": t, "coverage": share, "accuracy": accuracy})
    return rows


def confidently_wrong(
    probs: np.ndarray, y: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> float:
    """Share of images decided at `threshold` and wrong: the mistakes a bin acts on."""
    decided = is_confident(probs.max(axis=1), threshold)
    return _mean(decided & (probs.argmax(axis=1) != y), weights)


def by_source(
    probs: np.ndarray, y: np.ndarray, sources: Sequence[str], threshold: float
) -> dict[str, dict[str, float]]:
    """Per source: photos, share decided and share confidently wrong at `threshold`."""
    names = np.asarray(sources, dtype=object)
    rows = {}
    for name in sorted(set(sources)):
        mask = names == name
        share, _ = coverage(probs[mask], y[mask], threshold)
        rows[str(name)] = {
            "n": int(mask.sum()),
            "coverage": round(share, 4),
            "confidently_wrong": round(confidently_wrong(probs[mask], y[mask], threshold), 4),
        }
    return rows


def choose_threshold_per_source(
    probs: np.ndarray,
    y: np.ndarray,
    sources: Sequence[str],
    *,
    max_wrong: float,
    max_threshold: float,
    weights: np.ndarray | None = None,
) -> tuple[Threshold, bool]:
    """The lowest threshold at which every source's confidently-wrong share is <= `max_wrong`.

    The worst source decides, not the pooled figure, so a small source unlike the rest cannot
    hide behind a big one. The share only falls as the threshold rises, so the first threshold
    that passes keeps the most photos sorted. Capped at `max_threshold`.

    Returns:
        The threshold with its (weighted) coverage and accuracy, and whether the target was met
        at or below the cap (False: the cap is returned).
    """
    if len(sources) != len(y):
        raise ValueError(f"{len(sources)} source names for {len(y)} validation images")
    names = np.asarray(sources, dtype=object)
    masks = [names == name for name in sorted(set(sources))]
    conf = probs.max(axis=1)
    chosen, met = max_threshold, False
    for t in np.unique(np.concatenate([[0.0], np.round(conf, 4), [max_threshold]])):
        if t > max_threshold:
            break
        worst = max(confidently_wrong(probs[m], y[m], float(t)) for m in masks)
        if worst <= max_wrong:
            chosen, met = float(t), True
            break
    share, accuracy = coverage(probs, y, chosen, weights)
    correct = probs.argmax(axis=1) == y
    return (
        Threshold(
            threshold=round(chosen, 4),
            coverage=share,
            accuracy_covered=accuracy,
            accuracy_all=_mean(correct, weights),
        ),
        met,
    )


def uncertain_threshold(
    val_probs: np.ndarray,
    y_val: np.ndarray,
    test_probs: np.ndarray,
    y_test: np.ndarray,
    cfg: CalibrateConfig,
    *,
    val_weights: np.ndarray | None = None,
    val_sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Choose the threshold on validation by `cfg.threshold_rule` and say what it does on test:
    the run summary's `uncertain` section (the manifest keeps it without `tradeoff_val`).

    With `val_sources` (each validation photo's source) the section also holds every source's
    coverage and confidently-wrong share at the chosen threshold (`by_source_val`); with the
    `per_source` rule, the pooled rule's threshold and the coverage the per-source rule costs
    against it (`coverage_cost`).
    """
    pooled = choose_threshold(
        val_probs,
        y_val,
        target_accuracy=cfg.target_accuracy,
        max_threshold=cfg.max_threshold,
        weights=val_weights,
    )
    thr, extra = pooled, {}
    if cfg.threshold_rule == "per_source":
        sources = list(val_sources) if val_sources is not None else ["all"] * len(y_val)
        thr, met = choose_threshold_per_source(
            val_probs,
            y_val,
            sources,
            max_wrong=cfg.max_confidently_wrong,
            max_threshold=cfg.max_threshold,
            weights=val_weights,
        )
        extra = {
            "max_confidently_wrong": cfg.max_confidently_wrong,
            "target_met": met,
            "pooled_threshold": pooled.threshold,
            "pooled_val_coverage": round(pooled.coverage, 4),
            "coverage_cost": round(pooled.coverage - thr.coverage, 4),
        }
    test_coverage, test_accuracy = coverage(test_probs, y_test, thr.threshold)
    section: dict[str, Any] = {
        "rule": cfg.threshold_rule,
        "threshold": thr.threshold,
        "target_accuracy": cfg.target_accuracy,
        "val_coverage": round(thr.coverage, 4),
        "val_accuracy_decided": round(thr.accuracy_covered, 4),
        "val_confidently_wrong": round(
            confidently_wrong(val_probs, y_val, thr.threshold, val_weights), 4
        ),
        "test_coverage": round(test_coverage, 4),
        "test_accuracy_decided": round(test_accuracy, 4),
        "test_confidently_wrong": round(confidently_wrong(test_probs, y_test, thr.threshold), 4),
        **extra,
        "tradeoff_val": tradeoff(val_probs, y_val, list(TRADEOFF_THRESHOLDS), val_weights),
    }
    if val_sources is not None:
        section["by_source_val"] = by_source(val_probs, y_val, val_sources, thr.threshold)
    return section
