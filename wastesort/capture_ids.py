"""Capture ids, keys and names, and which predictions are captured: in one place for the store,
the API, the bin and the export. A capture id carries its time and source, so finding a capture
is one GET; an id this module did not make names no object."""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wastesort.errors import NotFoundError, RegistryError
from wastesort.scoring import UNCERTAIN

CAPTURES = "captures"
LABELS = "labels"
NOT_WASTE = "not_waste"
"""The one label beside the model's classes: the photo shows no waste at all."""
DEFAULT_SAMPLE = 0.02
"""The fraction of decided predictions kept (every `uncertain` one is kept)."""
MAX_SIDE = 1024
"""Captures are shrunk to fit this many pixels a side: enough to relabel and retrain on (the
model sees 256x192), small enough to keep storage and upload cost low."""
JPEG_QUALITY = 88
API_SOURCE = "api"
LABELLED_TAG = "labelled"
"""The S3 object tag a capture carries (`false` when written, `true` once labelled); the
bucket's lifecycle rule expires `labelled=false` captures (infra/constructs/captures.py)."""
UNLABELLED = f"{LABELLED_TAG}=false"
"""The tag of a capture as written: S3's `Tagging` header (the edge uploads with it too)."""

REASONS = ("uncertain", "sampled", "feedback")
LABEL_SOURCES = ("review", "feedback")

SOURCE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
"""What a capture's source (`api`, a device id) may be: it names a folder and ends an id."""
_SOURCE = SOURCE_PATTERN
_ID = re.compile(rf"^(?P<time>\d{{8}}T\d{{6}}Z)-(?P<rand>[0-9a-f]{{12}})-(?P<source>{_SOURCE})$")
_TIME = "%Y%m%dT%H%M%SZ"


class CaptureError(RegistryError):
    code = "capture_error"


class UnknownCaptureError(CaptureError, NotFoundError):
    """No capture has this id (or the id is not one this store could have made)."""

    code = "unknown_capture"


# --- ids and keys ------------------------------------------------------------------------------


def new_id(source: str, *, now: datetime | None = None, unique: str | None = None) -> str:
    """`<yyyymmddThhmmssZ>-<12 hex>-<source>`: sorts by time, names its folder, unguessable.

    Args:
        unique: the 12 hex digits (default: random). A caller that must make the same id again
            (a bin deciding a file again after a crash) passes its own, with the same `now`.

    Raises:
        CaptureError: `source` is not a safe name (letters, digits, `_`, `-`; at most 64), or
            `unique` is not 12 lowercase hex digits.
    """
    if not re.fullmatch(_SOURCE, source):
        raise CaptureError(f"capture source {source!r} must match {_SOURCE}")
    if unique is not None and not re.fullmatch(r"[0-9a-f]{12}", unique):
        raise CaptureError(f"{unique!r} is not 12 lowercase hex digits")
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_TIME)
    return f"{stamp}-{unique or uuid.uuid4().hex[:12]}-{source}"


def parse_id(capture_id: str) -> tuple[datetime, str]:
    """(time, source) of a capture id.

    Raises:
        UnknownCaptureError: not an id this module makes (so it names no object).
    """
    match = _ID.match(capture_id) if isinstance(capture_id, str) else None
    if not match:
        raise UnknownCaptureError(f"{capture_id!r} is not a capture id")
    try:
        when = datetime.strptime(match["time"], _TIME).replace(tzinfo=UTC)
    except ValueError:  # the shape of a time but no real one (month 00, second 61)
        raise UnknownCaptureError(f"{capture_id!r} is not a capture id") from None
    return when, match["source"]


def key_of(capture_id: str) -> str:
    """The key of a capture without its extension: `captures/<source>/<yyyy>/<mm>/<dd>/<id>`."""
    when, source = parse_id(capture_id)
    return f"{CAPTURES}/{source}/{when:%Y/%m/%d}/{capture_id}"


@dataclass
class Sampler:
    """Which predictions are kept: every `uncertain` one, and `fraction` of the decided ones.

    `rng` is injectable so tests (and a reproducible replay) get the same choices.
    """

    fraction: float = DEFAULT_SAMPLE
    rng: random.Random = field(default_factory=random.Random)

    def reason(self, decision: str) -> str | None:
        """`uncertain`, `sampled`, or None (not captured)."""
        if decision == UNCERTAIN:
            return "uncertain"
        if self.fraction > 0 and self.rng.random() < self.fraction:
            return "sampled"
        return None
