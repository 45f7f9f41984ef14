"""From per-frame predictions to one decision per item: K consecutive agreeing frames, else
`uncertain` (the safe default bin).

Pure logic with no I/O, so it is tested with made-up predictions and no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wastesort.classifier import Prediction
from wastesort.scoring import UNCERTAIN, is_confident


@dataclass(frozen=True)
class Decision:
    label: str
    """A class, or `uncertain`."""
    confidence: float
    """Mean confidence of the agreeing frames (for `uncertain`: of the best frame seen)."""
    frames: int
    """Frames that went into this decision."""
    model_version: str
    scores: dict[str, float] = field(default_factory=dict)
    """The last frame's calibrated scores, as the core reports them."""

    @property
    def uncertain(self) -> bool:
        return self.label == UNCERTAIN

    def event(self, *, source: str, latency_ms: float, accelerator: str) -> dict[str, Any]:
        """The decision's telemetry event (the queue adds its id, time and device)."""
        return {
            "model_version": self.model_version,
            "decision": self.label,
            "confidence": self.confidence,
            "frames": self.frames,
            "latency_ms": latency_ms,
            "source": source,
            "accelerator": accelerator,
        }


class Debouncer:
    """Decide once per item: a class when `k` consecutive frames name it with confidence at or
    above the threshold; `uncertain` when `window` frames pass without that.

    The threshold is the model's recorded `uncertain_threshold` unless configured, and it
    follows the model across an update (`threshold=None`).
    """

    def __init__(self, k: int = 3, window: int | None = None, threshold: float | None = None):
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.window = window or 2 * k - 1
        if self.window < k:
            raise ValueError("window must be at least k")
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget the item in progress (a new trigger, a model swap)."""
        self._seen = 0
        self._streak_label: str | None = None
        self._streak: list[float] = []
        self._best: Prediction | None = None

    def flush(self, model_version: str) -> Decision | None:
        """End the item in progress early (its burst is over): `uncertain` if any frame was
        seen and none decided it, else None."""
        if self._seen == 0 or self._best is None:
            return None
        best, seen = self._best, self._seen
        self.reset()
        return Decision(
            label=UNCERTAIN,
            confidence=best.confidence,
            frames=seen,
            model_version=model_version,
            scores=dict(best.all_confidences),
        )

    def update(self, prediction: Prediction, model_threshold: float = 0.0) -> Decision | None:
        """Feed one frame's prediction; returns a Decision when the item is decided."""
        threshold = model_threshold if self.threshold is None else self.threshold
        self._seen += 1
        if self._best is None or prediction.confidence > self._best.confidence:
            self._best = prediction
        confident = is_confident(prediction.confidence, threshold)
        label = prediction.predicted_class
        if confident and label == self._streak_label:
            self._streak.append(prediction.confidence)
        elif confident:
            self._streak_label, self._streak = label, [prediction.confidence]
        else:
            self._streak_label, self._streak = None, []

        if self._streak_label is not None and len(self._streak) >= self.k:
            decision = Decision(
                label=self._streak_label,
                confidence=round(sum(self._streak) / len(self._streak), 6),
                frames=self._seen,
                model_version=prediction.model_version,
                scores=dict(prediction.all_confidences),
            )
            self.reset()
            return decision
        if self._seen >= self.window:
            best = self._best
            decision = Decision(
                label=UNCERTAIN,
                confidence=best.confidence,
                frames=self._seen,
                model_version=prediction.model_version,
                scores=dict(prediction.all_confidences),
            )
            self.reset()
            return decision
        return None
