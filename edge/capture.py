"""Capture at the bin: the photos worth learning from join the telemetry queue, upload later.

What is kept is the core's rule (`wastesort.capture.Sampler`): every `uncertain` decision and a
`capture.sample` fraction of the decided ones. The record and the re-encoded photo (no metadata,
at most 1024 px a side) are made by the core (`wastesort.capture.prepare`), so a bin's captures
are the API's, under `captures/<device id>/<yyyy>/<mm>/<dd>/<capture id>.{jpg,json}`.

A capture is committed in the same SQLite transaction as its decision's event (`TelemetryQueue.
record`), so the two are kept or lost together. A file in a watched folder decided again (a
kill between its event and `decided.sqlite`) makes the same capture id again: the time is the
file's mtime and the id's 12 hex digits are its event id's, and whether it is sampled follows
from the event id too. The queue keeps an id once, and the upload is a conditional put that
leaves an object already there alone: nothing is stored twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from edge.decided import file_mtime
from wastesort.capture import Sampler, key_of, new_id, prepare, record_bytes
from wastesort.scoring import UNCERTAIN

if TYPE_CHECKING:
    from edge.config import CaptureConfig
    from edge.decide import Decision
    from edge.sources import Frame


@dataclass(frozen=True)
class QueuedCapture:
    """A capture as the queue holds it until it is uploaded."""

    capture_id: str
    key: str
    """`captures/<device id>/<yyyy>/<mm>/<dd>/<capture id>`: `.jpg` and `.json` are added."""
    jpeg: bytes
    record: bytes


@dataclass(frozen=True)
class _Predicted:
    """A decision in the fields of the core's `Prediction` (what a capture record holds)."""

    model_version: str
    predicted_class: str
    confidence: float
    all_confidences: dict[str, float]
    decision: str


def _predicted(decision: Decision) -> _Predicted:
    scores = decision.scores
    top = max(scores, key=scores.__getitem__) if scores else decision.label
    return _Predicted(
        model_version=decision.model_version,
        predicted_class=decision.label if decision.label != UNCERTAIN else top,
        confidence=decision.confidence,
        all_confidences=dict(scores),
        decision=decision.label,
    )


class EdgeCapture:
    """Chooses and prepares the captures of one device (see the module docstring)."""

    def __init__(self, config: CaptureConfig, *, device_id: str) -> None:
        self.fraction = config.sample
        self.device_id = device_id
        self._sampler = Sampler(config.sample)

    def take(self, decision: Decision, frame: Frame, event_id: str) -> QueuedCapture | None:
        """The capture of a decision made on `frame`, or None when it is not kept.

        Raises:
            ImageError: the frame does not decode (it did for the model, so rarely).
        """
        keyed = frame.key is not None
        # seeded by the event id: the same file, decided again, is sampled (or not) again
        seeded = random.Random(event_id)  # noqa: S311  (a sample, not a secret)
        sampler = Sampler(self.fraction, seeded) if keyed else self._sampler
        reason = sampler.reason(decision.label)
        if reason is None:
            return None
        if keyed:
            assert frame.key is not None
            when = datetime.fromtimestamp(file_mtime(frame.key), UTC)
            capture_id = new_id(self.device_id, now=when, unique=event_id[:12])
        else:
            when = datetime.fromtimestamp(frame.captured_at, UTC)
            capture_id = new_id(self.device_id, now=when)
        image: bytes | Image.Image
        if frame.data is not None:
            image = frame.data
        else:
            image = Image.fromarray(np.ascontiguousarray(frame.array, dtype=np.uint8))
        record, jpeg = prepare(
            image, _predicted(decision), reason=reason, capture_id=capture_id, now=when
        )
        return QueuedCapture(capture_id, key_of(capture_id), jpeg, record_bytes(record))
