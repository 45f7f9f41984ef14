"""What a drift report compares: a `Window` of predictions and the `Baseline` it is held against
(from a version's reference file, or built from a window of photos). Plain numpy data; the
verdicts are `wastesort.drift`'s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wastesort.reference import CONFIDENCE_BINS, STATS, Reference


@dataclass(frozen=True)
class Window:
    """Predictions to judge (or to build a baseline from), one row per image."""

    scores: np.ndarray
    """(N, L) calibrated scores, in label order."""
    embeddings: np.ndarray | None = None
    """(N, K) projected embeddings (the reference's PCA), when the version has them."""
    image_stats: np.ndarray | None = None
    """(N, len(STATS)), `wastesort.reference.image_stats_batch`."""
    truth: np.ndarray | None = None
    """(N,) true label indices where known, -1 where not."""

    @property
    def n(self) -> int:
        return len(self.scores)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> Window:
        """Prediction dicts (`Prediction.to_dict(details=True)`, prediction records) -> a
        window; `label` in a record, when present and one of `labels`, is its truth."""
        index = {name: i for i, name in enumerate(labels)}
        scores = np.zeros((len(records), len(labels)))
        for row, record in zip(scores, records, strict=True):
            for name, value in record["all_confidences"].items():
                row[index[name]] = value
        embeddings = [r.get("embedding") for r in records]
        stats = [r.get("image_stats") for r in records]
        truth = np.array([index.get(r.get("label") or "", -1) for r in records])
        return cls(
            scores=scores,
            embeddings=np.array(embeddings, np.float64) if records and all(embeddings) else None,
            image_stats=(
                np.array([[s[k] for k in STATS] for s in stats])  # type: ignore[index]
                if records and all(stats)
                else None
            ),
            truth=truth if (truth >= 0).any() else None,
        )


@dataclass(frozen=True)
class Baseline:
    """What the version saw: from its reference file, or from a window of photos."""

    labels: tuple[str, ...]
    count: int
    predicted_mix: np.ndarray
    confidence_edges: np.ndarray
    confidence_hist: np.ndarray
    """Share of images per confidence bin."""
    scores: np.ndarray | None = None
    """Per-image calibrated scores; a reference file holds none (per-class KS is skipped)."""
    embeddings: np.ndarray | None = None
    image_stats: np.ndarray | None = None
    accuracy: float | None = None
    """Measured on the baseline's own labels, when it had them."""
    source: str = ""

    @classmethod
    def from_reference(cls, ref: Reference) -> Baseline:
        embeddings = ref.embeddings if ref.embeddings.size else None
        return cls(
            labels=tuple(ref.labels),
            count=int(ref.meta.get("count", len(ref.embeddings))),
            predicted_mix=np.asarray(ref.predicted_mix, np.float64),
            confidence_edges=np.asarray(ref.confidence_edges, np.float64),
            confidence_hist=np.asarray(ref.confidence_hist, np.float64),
            embeddings=embeddings,
            image_stats=ref.image_stats if ref.image_stats.size else None,
            source=f"reference file of {ref.meta.get('version', 'the version')}",
        )

    @classmethod
    def from_window(cls, window: Window, labels: Sequence[str], source: str = "") -> Baseline:
        n = max(window.n, 1)
        edges = np.linspace(0, 1, CONFIDENCE_BINS + 1)
        hist, _ = np.histogram(window.scores.max(axis=1), bins=edges)
        return cls(
            labels=tuple(labels),
            count=window.n,
            predicted_mix=np.bincount(window.scores.argmax(axis=1), minlength=len(labels)) / n,
            confidence_edges=edges,
            confidence_hist=hist / n,
            scores=window.scores,
            embeddings=window.embeddings,
            image_stats=window.image_stats,
            accuracy=measured_accuracy(window),
            source=source,
        )

    def confidence_moments(self) -> tuple[float, float]:
        """(mean, variance) of the top confidence: exact from per-image scores, else from the
        histogram's bin centres (within half a bin, 0.025)."""
        if self.scores is not None:
            top = self.scores.max(axis=1)
            return float(top.mean()), float(top.var())
        centres = (self.confidence_edges[:-1] + self.confidence_edges[1:]) / 2
        mean = float((self.confidence_hist * centres).sum())
        return mean, float((self.confidence_hist * (centres - mean) ** 2).sum())

    def uncertain_share(self, threshold: float) -> float:
        """Share under the uncertain threshold: exact from scores, else interpolated linearly
        within the histogram bin that holds the threshold."""
        if self.scores is not None:
            return float((self.scores.max(axis=1) < threshold).mean())
        lo, hi = self.confidence_edges[:-1], self.confidence_edges[1:]
        part = np.clip((threshold - lo) / (hi - lo), 0, 1)
        return float((self.confidence_hist * part).sum())


def measured_accuracy(window: Window) -> float | None:
    """Share of the labelled records whose top class is their label; None without labels."""
    if window.truth is None or not (window.truth >= 0).any():
        return None
    known = window.truth >= 0
    return float((window.scores[known].argmax(axis=1) == window.truth[known]).mean())
