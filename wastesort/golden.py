"""The golden-set rule: one check for the pre-traffic hook and the edge self-test.

Each published version carries a few images with the class and scores it gave them at
publish time. Before a version serves anyone (a new Lambda version, a bin's update) they are
replayed through whatever will serve, and `check` returns every failure under one rule:

- the predicted class must be the published one, unless the published score of that class
  was itself below the version's `uncertain` threshold (an image the model was unsure of may
  tip to another class on another runtime's int8 rounding; its scores are still checked);
- every published score must be within `tolerance` of the score served now (runtimes round
  int8 differently: up to 0.08 on unsure images, 0.0015 on the bundled golden set).

A predictor that cannot answer (a bad image, an HTTP error) is a failure, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wastesort.errors import WastesortError
from wastesort.scoring import is_confident

if TYPE_CHECKING:
    from wastesort.manifest import GoldenItem, ModelEntry

DEFAULT_TOLERANCE = 0.1
"""How far a served score may be from the published one (see the module docstring)."""


class PredictError(Exception):
    """Raised by a predict function that got no prediction (e.g. an HTTP error status)."""


@dataclass(frozen=True)
class Answer:
    """What the check needs of a prediction, from a `Prediction` or the API's JSON."""

    predicted_class: str
    scores: Mapping[str, float]
    confidence: float | None = None

    @classmethod
    def of(cls, prediction: Any) -> Answer:
        if isinstance(prediction, Mapping):
            return cls(
                str(prediction.get("predicted_class")),
                dict(prediction.get("all_confidences") or {}),
                prediction.get("confidence"),
            )
        return cls(
            prediction.predicted_class, dict(prediction.all_confidences), prediction.confidence
        )


def check_item(
    item: GoldenItem, answer: Answer, *, threshold: float, tolerance: float = DEFAULT_TOLERANCE
) -> list[str]:
    """The failures of one golden image's answer under the rule above."""
    name = item.image.path
    failures = []
    published = item.scores.get(item.expected_class)
    borderline = published is not None and not is_confident(published, threshold)
    if answer.predicted_class != item.expected_class and not borderline:
        failures.append(
            f"{name}: expected {item.expected_class!r}, got {answer.predicted_class!r} "
            f"(confidence {answer.confidence})"
        )
    for label, expected in item.scores.items():
        actual = float(answer.scores.get(label, 0.0))
        if abs(actual - expected) > tolerance:
            failures.append(f"{name}: {label} scores {actual:.4f}, published {expected:.4f}")
    return failures


def check(
    predict: Callable[[bytes], Any],
    entry: ModelEntry,
    images: Iterable[tuple[GoldenItem, bytes]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[str]:
    """Replay golden images through `predict` and return every failure (empty: passed).

    Args:
        predict: image bytes -> a `Prediction` or a mapping with `predicted_class` and
            `all_confidences` (all classes: a top-k answer reads as 0 for the rest).
        entry: the version under test (its uncertain threshold decides what is borderline).
        images: each golden item of the entry with its verified bytes.
        tolerance: see `DEFAULT_TOLERANCE`.
    """
    failures = []
    for item, data in images:
        try:
            answer = Answer.of(predict(data))
        except (WastesortError, PredictError) as exc:
            failures.append(f"{item.image.path}: no prediction ({exc})")
            continue
        failures += check_item(
            item, answer, threshold=entry.uncertain_threshold, tolerance=tolerance
        )
    return failures
