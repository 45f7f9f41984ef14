"""Captures to review, written straight into a capture store: uncertain ones, sampled ones,
and sampled ones a caller's feedback disagreed with, from two sources and two model versions.
Shared by the review API tests and the browser tests."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from wastesort.capture import CaptureStore, new_id

ADMIN_TOKEN = "admin-token-for-tests-36"
START = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


@dataclass
class FakePrediction:
    """What `CaptureStore.save` reads of a prediction."""

    predicted_class: str
    confidence: float
    decision: str
    model_version: str
    all_confidences: dict[str, float] = field(default_factory=dict)


def photo(index: int) -> bytes:
    """A small distinct JPEG (a colour per index)."""
    colour = ((index * 47) % 256, (index * 91) % 256, (index * 137) % 256)
    out = io.BytesIO()
    Image.new("RGB", (96, 72), colour).save(out, format="JPEG")
    return out.getvalue()


def seed(
    root: Path, labels: list[str], *, uncertain: int = 3, sampled: int = 3, disagreed: int = 2
) -> dict[str, list[str]]:
    """Write the captures; returns their ids by the queue they belong in."""
    store = CaptureStore.from_uri(str(root))
    out: dict[str, list[str]] = {"uncertain": [], "disagreement": [], "sample": []}
    plan = (
        [("uncertain", i) for i in range(uncertain)]
        + [("sample", i) for i in range(sampled)]
        + [("disagreement", i) for i in range(disagreed)]
    )
    for n, (queue, i) in enumerate(plan):
        when = START + timedelta(minutes=n)
        source = "api" if n % 2 == 0 else "bin-0042"
        version = "tiny-1" if n % 3 else "tiny-0"
        predicted = labels[n % len(labels)]
        rest = (1 - 0.9) / (len(labels) - 1)
        sure = queue != "uncertain"
        confidence = 0.9 if sure else 0.4
        prediction = FakePrediction(
            predicted_class=predicted,
            confidence=confidence,
            decision=predicted if sure else "uncertain",
            model_version=version,
            all_confidences={name: confidence if name == predicted else rest for name in labels},
        )
        capture_id = new_id(source, now=when, unique=f"{n:012x}")
        reason = "uncertain" if queue == "uncertain" else "sampled"
        store.save(photo(n + i), prediction, reason=reason, capture_id=capture_id, now=when)
        if queue == "disagreement":
            other = labels[(n + 1) % len(labels)]
            store.add_label(capture_id, other, by="api-caller", source="feedback", now=when)
        out[queue].append(capture_id)
    return out


def seed_samples(root: Path, classifier: object, photos: list[Path]) -> list[str]:
    """Capture real photos as the API would: classified, `uncertain` or sampled, from the API
    and a bin in turn. Returns the ids."""
    store = CaptureStore.from_uri(str(root))
    ids = []
    for n, path in enumerate(photos):
        data = path.read_bytes()
        prediction = classifier.predict(data)  # type: ignore[attr-defined]
        when = START + timedelta(minutes=n)
        capture_id = new_id("api" if n % 2 == 0 else "bin-0042", now=when, unique=f"{n:012x}")
        reason = "uncertain" if prediction.decision == "uncertain" else "sampled"
        store.save(data, prediction, reason=reason, capture_id=capture_id, now=when)
        ids.append(capture_id)
    return ids
