"""The capture store: field photos worth learning from, and the labels people give them.

Layout, on any registry store back-end (a local folder or `s3://bucket/prefix`):

    captures/<source>/<yyyy>/<mm>/<dd>/<capture_id>.jpg   the photo, re-encoded, no metadata
    captures/<source>/<yyyy>/<mm>/<dd>/<capture_id>.json  the prediction record (`Capture`)
    labels/<capture_id>/<time>-<uuid>.json                 one label event each (`LabelEvent`)

Every object is written once (`RegistryStore.put_new`) and never replaced: a new label is a new
event and the latest one wins, so nothing a person said is lost and two writers never collide.
A capture id carries its time and source, so finding a capture is one GET, never a scan. No IP
address, API key or EXIF ever reaches the store: the API and the edge pass only what is here.

On S3 a capture's photo and record are tagged `labelled=false` when written and `labelled=true`
when a label event is added: the bucket's lifecycle rule expires unlabelled captures after N days
(infra/constructs/captures.py), so what a person labelled is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from PIL import Image

from wastesort.capture_ids import (  # re-exported: `wastesort.capture` is the front door
    API_SOURCE,
    CAPTURES,
    DEFAULT_SAMPLE,
    JPEG_QUALITY,
    LABEL_SOURCES,
    LABELLED_TAG,
    LABELS,
    MAX_SIDE,
    NOT_WASTE,
    REASONS,
    SOURCE_PATTERN,
    UNLABELLED,
    CaptureError,
    Sampler,
    UnknownCaptureError,
    key_of,
    new_id,
    parse_id,
)
from wastesort.errors import NotFoundError, RegistryError
from wastesort.preprocess import DEFAULT_MAX_PIXELS, load_image
from wastesort.registry.s3 import S3Store
from wastesort.registry.store import RegistryStore

__all__ = [
    "API_SOURCE",
    "CAPTURES",
    "DEFAULT_SAMPLE",
    "JPEG_QUALITY",
    "LABELLED_TAG",
    "LABELS",
    "LABEL_SOURCES",
    "MAX_SIDE",
    "NOT_WASTE",
    "REASONS",
    "SOURCE_PATTERN",
    "UNLABELLED",
    "Capture",
    "CaptureError",
    "CaptureStore",
    "LabelEvent",
    "Sampler",
    "UnknownCaptureError",
    "key_of",
    "new_id",
    "parse_id",
    "prepare",
    "record_bytes",
    "sanitize",
]

# --- what is captured -------------------------------------------------------------------------


def sanitize(
    data: bytes | Image.Image, *, max_side: int = MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """The photo as a fresh JPEG: upright, RGB, at most `max_side` a side, and without any
    metadata (EXIF, GPS, comments, ICC): only pixels leave the caller.

    Args:
        data: encoded bytes, or an RGB image already decoded (a camera frame on the edge).

    Raises:
        ImageError: the bytes do not decode (the API has already refused such images).
    """
    if isinstance(data, Image.Image):
        image = data.convert("RGB")  # a copy: the caller's image is left as it was
    else:
        image = load_image(data, max_pixels=max_pixels, draft_size=(max_side, max_side))
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


# --- the records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    """The prediction record beside a captured photo (`<id>.json`)."""

    id: str
    time: str
    source: str
    """`api`, or the device id of a bin."""
    model_version: str
    predicted_class: str
    confidence: float
    all_confidences: dict[str, float]
    decision: str
    reason: str
    """Why it was kept: `uncertain`, `sampled` or `feedback`."""
    sha256: str
    """Of the stored (re-encoded) JPEG."""
    bytes: int
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capture:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    @property
    def day(self) -> str:
        return self.time[:10]


@dataclass(frozen=True)
class LabelEvent:
    """One person's (or caller's) label for a capture; the latest event wins."""

    capture_id: str
    label: str
    by: str
    source: str
    """`review` (a reviewer) or `feedback` (a caller of the API)."""
    time: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prepare(
    image: bytes | Image.Image,
    prediction: Any,
    *,
    reason: str,
    capture_id: str,
    now: datetime | None = None,
) -> tuple[Capture, bytes]:
    """The record and the re-encoded photo of a capture, without writing anything: what
    `CaptureStore.save` writes, and what a bin queues to upload later under `key_of(id)`.

    Raises:
        CaptureError: a bad reason or id. ImageError: the photo does not decode.
    """
    if reason not in REASONS:
        raise CaptureError(f"reason {reason!r} is not one of {', '.join(REASONS)}")
    when, source = parse_id(capture_id)
    clean = sanitize(image)
    width, height = Image.open(io.BytesIO(clean)).size  # the header only, no decode
    record = Capture(
        id=capture_id,
        time=_iso(now or when),
        source=source,
        model_version=prediction.model_version,
        predicted_class=prediction.predicted_class,
        confidence=prediction.confidence,
        all_confidences=dict(prediction.all_confidences),
        decision=prediction.decision,
        reason=reason,
        sha256=hashlib.sha256(clean).hexdigest(),
        bytes=len(clean),
        width=width,
        height=height,
    )
    return record, clean


def record_bytes(record: Capture) -> bytes:
    """A record as stored (`<id>.json`)."""
    return json.dumps(record.to_dict(), indent=1).encode()


# --- the store ------------------------------------------------------------------------------------


class CaptureStore:
    """Captures and label events over one `RegistryStore` (see the module docstring)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.uri = store.uri

    @classmethod
    def from_uri(cls, uri: str, *, timeout_s: float | None = None) -> CaptureStore:
        """A capture store on a folder or `s3://bucket/prefix`.

        Args:
            timeout_s: for S3, bound every call (connect and read) and make one attempt only:
                a request path waits for a capture write, and must not wait long.
        """
        if uri.startswith("s3://"):
            return cls(S3Store(uri, timeout_s=timeout_s))  # its client is built on first use
        if "://" in uri and not uri.startswith("file://"):
            raise CaptureError(f"captures go to a folder or s3://bucket/prefix, not {uri!r}")
        from wastesort.registry.local import LocalStore  # noqa: PLC0415

        return cls(LocalStore(uri.removeprefix("file://")))

    def _put(self, key: str, data: bytes, *, tagged: bool = False) -> None:
        """Write once; on S3 a capture's objects carry `labelled=false` (`tagged`)."""
        if tagged and isinstance(self.store, S3Store):
            written = self.store.put_new(key, data, tagging=UNLABELLED)
        else:
            written = self.store.put_new(key, data)
        if not written:
            raise CaptureError(f"{key} already exists in {self.uri} (objects are write-once)")

    def _mark_labelled(self, capture_id: str) -> None:
        """On S3, re-tag the capture `labelled=true`, so the lifecycle rule keeps it."""
        if not isinstance(self.store, S3Store):
            return
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        store, key = self.store, key_of(capture_id)
        tags = {"TagSet": [{"Key": LABELLED_TAG, "Value": "true"}]}
        for suffix in (".jpg", ".json"):
            full = f"{store.prefix}/{key}{suffix}" if store.prefix else f"{key}{suffix}"
            try:
                store.client.put_object_tagging(Bucket=store.bucket, Key=full, Tagging=tags)
            except (ClientError, BotoCoreError) as exc:
                raise RegistryError(f"cannot tag {key}{suffix} in {self.uri}: {exc}") from exc

    def save(
        self,
        image: bytes,
        prediction: Any,
        *,
        reason: str,
        capture_id: str | None = None,
        source: str = API_SOURCE,
        now: datetime | None = None,
    ) -> Capture:
        """Re-encode the photo and write it with its record: the photo first, so a record
        never names a missing photo.

        Args:
            prediction: a `Prediction` (or anything with its fields).
            reason: `uncertain`, `sampled` or `feedback`.
            capture_id: an id made earlier by `new_id` (the API answers it before the write).

        Raises:
            ImageError: the photo does not decode. RegistryError: the store refused the write.
        """
        capture_id = capture_id or new_id(source, now=now)
        record, clean = prepare(image, prediction, reason=reason, capture_id=capture_id, now=now)
        key = key_of(capture_id)
        self._put(f"{key}.jpg", clean, tagged=True)
        self._put(f"{key}.json", record_bytes(record), tagged=True)
        return record

    def record(self, capture_id: str) -> Capture:
        """Raises: UnknownCaptureError: no such capture. RegistryError: the store failed."""
        try:
            data = self.store.get(f"{key_of(capture_id)}.json")
        except UnknownCaptureError:
            raise
        except NotFoundError:
            raise UnknownCaptureError(f"no capture {capture_id} in {self.uri}") from None
        try:
            return Capture.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"the record of {capture_id} is unreadable: {exc}") from exc

    def image(self, capture_id: str) -> bytes:
        try:
            return self.store.get(f"{key_of(capture_id)}.jpg")
        except UnknownCaptureError:
            raise
        except NotFoundError:
            raise UnknownCaptureError(f"no capture {capture_id} in {self.uri}") from None

    def add_label(
        self,
        capture_id: str,
        label: str,
        *,
        by: str,
        source: str,
        now: datetime | None = None,
    ) -> LabelEvent:
        """Append a label event (the capture's existence is the caller's to check); on S3 the
        capture is then tagged `labelled=true`, so it no longer expires.

        Raises:
            RegistryError: the event, or the tag, could not be written (the event, once
                written, stays: a retry adds another, and the latest wins).
        """
        if source not in LABEL_SOURCES:
            raise CaptureError(f"label source {source!r} is not one of {', '.join(LABEL_SOURCES)}")
        parse_id(capture_id)
        now = now or datetime.now(UTC)
        event = LabelEvent(capture_id, label, by, source, _iso(now))
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{LABELS}/{capture_id}/{stamp}-{uuid.uuid4().hex}.json"
        self._put(key, json.dumps(event.to_dict()).encode())
        self._mark_labelled(capture_id)
        return event

    def _event(self, key: str) -> LabelEvent:
        fields = json.loads(self.store.get(key))
        return LabelEvent(**{k: fields[k] for k in LabelEvent.__dataclass_fields__})

    def labels(self, capture_id: str) -> list[LabelEvent]:
        """Every label event of a capture, oldest first (keys sort by time)."""
        parse_id(capture_id)
        return [self._event(key) for key in self.store.list(f"{LABELS}/{capture_id}/")]

    def all_labels(self) -> dict[str, list[LabelEvent]]:
        """capture id -> its label events, oldest first: one listing for a whole export."""
        out: dict[str, list[LabelEvent]] = {}
        for key in self.store.list(f"{LABELS}/"):
            if key.endswith(".json"):
                event = self._event(key)
                out.setdefault(event.capture_id, []).append(event)
        return out

    def captures(self, *, since: date | None = None) -> Iterator[Capture]:
        """Every capture record, by source then time; `since` skips older days (by key)."""
        for key in self.store.list(f"{CAPTURES}/"):
            if not key.endswith(".json"):
                continue
            capture_id = key.rsplit("/", 1)[-1].removesuffix(".json")
            try:
                when, _ = parse_id(capture_id)
            except UnknownCaptureError:
                continue  # not ours (a stray file); never fatal for an export
            if since is not None and when.date() < since:
                continue
            yield self.record(capture_id)
