"""Prediction records: a fair sample of what was classified, for drift reports.

Captures are biased (every `uncertain` photo), edge events hold one confidence: a record is one
prediction with all its confidences, its projected 32-d embedding and image statistics, its
model version, source and time, and no image or address. Records are written in batches, one
JSON Lines object per batch, on any registry store back-end:

    records/<source>/<yyyy>/<mm>/<dd>/<hh>/<batch_id>.jsonl      (UTC hour of the records)

so a reader of a time window lists only that window's hour folders, never the whole bucket.
The API samples a share of its predictions into a `RecordBatcher`; the edge queues every
decision's record and its uploader writes the same layout under the device's name.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from wastesort.capture_ids import SOURCE_PATTERN
from wastesort.errors import NotFoundError, RegistryError, WastesortError
from wastesort.registry.store import RegistryStore

log = logging.getLogger(__name__)

RECORDS_PREFIX = "records"
SUFFIX = ".jsonl"
_SOURCE = re.compile(SOURCE_PATTERN)
_BATCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_HOUR = timedelta(hours=1)
_LAST = "\U0010ffff"
"""Sorts after every character a key can hold: `start_after=prefix + _LAST` skips a folder."""


class RecordError(WastesortError):
    code = "record_error"


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def hour_prefix(source: str, when: datetime) -> str:
    """`records/<source>/<yyyy>/<mm>/<dd>/<hh>/`: the folder of one source's hour (UTC)."""
    if not _SOURCE.fullmatch(source):
        raise RecordError(f"record source {source!r} must match {SOURCE_PATTERN}")
    return f"{RECORDS_PREFIX}/{source}/{_utc(when):%Y/%m/%d/%H}/"


def record_key(source: str, when: datetime, batch_id: str) -> str:
    """`records/<source>/<yyyy>/<mm>/<dd>/<hh>/<batch_id>.jsonl` (the hour of `when`, UTC).

    Raises:
        RecordError: `source` or `batch_id` is not a safe name.
    """
    if not _BATCH.fullmatch(batch_id):
        raise RecordError(f"batch id {batch_id!r} is not a safe name")
    return f"{hour_prefix(source, when)}{batch_id}{SUFFIX}"


def new_batch_id(now: datetime | None = None) -> str:
    """`<yyyymmddThhmmssZ>-<12 hex>`: batches of one hour list in the order they were written."""
    return f"{_utc(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}"


def iso(when: datetime) -> str:
    """The `at` of a record: ISO 8601 UTC with milliseconds and a `Z`."""
    return _utc(when).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_at(value: str) -> datetime:
    """A record's `at` back to an aware UTC datetime. Raises: ValueError: not a time."""
    return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def make_record(
    prediction: Any, *, source: str, at: datetime, device: str | None = None
) -> dict[str, Any]:
    """A prediction (`wastesort.Prediction`, or anything with its fields) -> a record.

    `embedding` is the prediction's, already projected to the reference's PCA space (32-d) by
    `Classifier`; it and `image_stats` are left out when the version has no reference file.
    """
    record: dict[str, Any] = {"at": iso(at), "source": source}
    if device is not None:
        record["device"] = device
    record.update(
        model_version=prediction.model_version,
        predicted_class=prediction.predicted_class,
        confidence=prediction.confidence,
        all_confidences=dict(prediction.all_confidences),
        decision=prediction.decision,
    )
    embedding = getattr(prediction, "embedding", None)
    if embedding is not None:
        record["embedding"] = list(embedding)
    stats = getattr(prediction, "image_stats", None)
    if stats is not None:
        record["image_stats"] = dict(stats)
    return record


def dumps(records: Iterable[dict[str, Any]]) -> bytes:
    """Records as one JSON Lines object (compact, one record a line)."""
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


@dataclass
class ReadStats:
    """What a `read_records` pass saw: objects read, records yielded, torn lines skipped."""

    objects: int = 0
    records: int = 0
    torn: int = 0
    partial: bool = False
    """True when `stop` ended the pass before every object of the window was read."""


def parse_lines(data: bytes, *, where: str = "", stats: ReadStats | None = None) -> list[dict]:
    """The records of one JSON Lines object; a line that does not parse to an object with
    `at` and `all_confidences` (a torn upload, a stray write) is skipped, counted and logged."""
    out: list[dict] = []
    torn = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "all_confidences" not in record:
                raise ValueError("not a prediction record")
            parse_at(record["at"])
        except (ValueError, KeyError, TypeError, AttributeError):
            torn += 1
            continue
        out.append(record)
    if torn:
        log.warning("skipped %d unreadable record lines in %s", torn, where or "a batch")
    if stats is not None:
        stats.torn += torn
    return out


def sources(store: RegistryStore) -> list[str]:
    """The sources that have records: one short listing per source, not a walk of them all."""
    root = store.local_path(RECORDS_PREFIX)
    if root is not None:
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and _SOURCE.fullmatch(p.name))
    found: list[str] = []
    after = ""
    while True:
        first = next(iter(store.list(f"{RECORDS_PREFIX}/", start_after=after)), None)
        if first is None:
            return sorted(found)
        source = first.split("/")[1]
        if _SOURCE.fullmatch(source):
            found.append(source)
        after = f"{RECORDS_PREFIX}/{source}/{_LAST}"


def hours(since: datetime, until: datetime) -> Iterator[datetime]:
    """The UTC hours that meet `[since, until)`, oldest first."""
    hour = _utc(since).replace(minute=0, second=0, microsecond=0)
    end = _utc(until)
    while hour < end:
        yield hour
        hour += _HOUR


def read_records(
    store: RegistryStore,
    *,
    since: datetime,
    until: datetime | None = None,
    source: str | None = None,
    model_version: str | None = None,
    stats: ReadStats | None = None,
    threads: int = 1,
    stop: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """The records with `since <= at < until` (default until: now), oldest hour first.

    Lists only the hour folders of the window (for each source, or for `source`), so an hourly
    reader of a year-old bucket reads one hour. Torn lines are skipped (`parse_lines`).

    Args:
        stats: filled in as the records are read (objects, records, torn lines, partial).
        threads: objects fetched at once (at most `threads` in flight, yielded in key order):
            one GET per object is what a growing fleet's window costs.
        stop: asked before each object is fetched; True ends the pass (`stats.partial`), so a
            caller with a deadline judges what was read instead of running out of time.

    Raises:
        RegistryError: the store cannot be listed or read.
    """
    start, end = _utc(since), _utc(until or datetime.now(UTC))
    stats = stats if stats is not None else ReadStats()
    names = [source] if source is not None else sources(store)
    keys = (
        key
        for name in names
        for hour in hours(start, end)
        for key in _objects(store, hour_prefix(name, hour))
    )
    for key, data in _fetched(store, keys, max(1, threads), stop, stats):
        stats.objects += 1
        for record in parse_lines(data, where=key, stats=stats):
            if model_version is not None and record.get("model_version") != model_version:
                continue
            if start <= parse_at(record["at"]) < end:
                stats.records += 1
                yield record


def _objects(store: RegistryStore, prefix: str) -> Iterator[str]:
    for key in store.list(prefix):
        if key.endswith(SUFFIX) and "/" not in key[len(prefix) :]:
            yield key


def _get(store: RegistryStore, key: str) -> bytes | None:
    try:
        return store.get(key)
    except NotFoundError:
        return None  # expired between the listing and the read


def _fetched(
    store: RegistryStore,
    keys: Iterator[str],
    threads: int,
    stop: Callable[[], bool] | None,
    stats: ReadStats,
) -> Iterator[tuple[str, bytes]]:
    """`(key, body)` in key order, with at most `threads` GETs in flight."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[tuple[str, Future[bytes | None]]] = deque()
        for key in keys:
            if stop is not None and stop():
                stats.partial = True
                break
            pending.append((key, pool.submit(_get, store, key)))
            if len(pending) >= threads:
                done_key, future = pending.popleft()
                if (data := future.result()) is not None:
                    yield done_key, data
        while pending:
            done_key, future = pending.popleft()
            if (data := future.result()) is not None:
                yield done_key, data


class RecordBatcher:
    """A bounded in-memory batch of records, flushed as one JSON Lines object per batch.

    `add` never blocks and never writes: when `max_pending` records wait, the new one is shed
    and counted (`dropped`). `flush` writes what waits (one object per hour of the records, at
    most `max_records` each) with `store.put_new`; a failed write is logged and counted
    (`failures`), its records go back to the front of the batch while there is room (else they
    are counted in `dropped`), and `due` holds off retrying for `max_age_s`, so a store that is
    down costs one attempt per period, not one per prediction. Safe to share between threads.
    """

    def __init__(
        self,
        store: RegistryStore,
        source: str,
        *,
        max_records: int = 200,
        max_age_s: float = 60.0,
        max_pending: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        hour_prefix(source, datetime.now(UTC))  # refuse a bad source now, not at the flush
        if max_records < 1 or max_pending < max_records or max_age_s < 0:
            raise RecordError("need 1 <= max_records <= max_pending and max_age_s >= 0")
        self.store = store
        self.source = source
        self.max_records = max_records
        self.max_age_s = max_age_s
        self.max_pending = max_pending
        self.clock = clock
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._pending: list[dict[str, Any]] = []
        self._oldest: float | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, record: dict[str, Any]) -> bool:
        """Queue one record; False when the batch is full (the record is shed and counted)."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                return False
            if not self._pending:
                self._oldest = self.clock()
            self._pending.append(record)
            return True

    def due(self) -> bool:
        """A flush is worth it: a full batch waits, or the oldest record is `max_age_s` old
        (and no failed write is being waited out)."""
        with self._lock:
            if not self._pending or self.clock() < self._retry_at:
                return False
            full = len(self._pending) >= self.max_records
            return full or self.clock() - (self._oldest or 0.0) >= self.max_age_s

    def flush(self) -> int:
        """Write every waiting record; returns how many were written (0 if another thread is
        flushing: this call does not wait for it)."""
        if not self._flushing.acquire(blocking=False):
            return 0
        try:
            with self._lock:
                batch, self._pending, self._oldest = self._pending, [], None
            written = 0
            chunks = self._chunks(batch)
            for index, (hour, chunk) in enumerate(chunks):
                try:
                    key = record_key(self.source, hour, new_batch_id())
                    if not self.store.put_new(key, dumps(chunk)):
                        raise RegistryError(f"{key} already exists")
                except (RegistryError, OSError) as exc:
                    self._failed(exc, [r for _, c in chunks[index:] for r in c])
                    break
                written += len(chunk)
            self.written += written
            return written
        finally:
            self._flushing.release()

    def _chunks(self, batch: list[dict[str, Any]]) -> list[tuple[datetime, list[dict]]]:
        by_hour: dict[datetime, list[dict]] = {}
        for record in batch:
            try:
                hour = parse_at(record["at"]).replace(minute=0, second=0, microsecond=0)
            except (KeyError, ValueError, TypeError, AttributeError):
                hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            by_hour.setdefault(hour, []).append(record)
        return [
            (hour, rows[i : i + self.max_records])
            for hour, rows in sorted(by_hour.items())
            for i in range(0, len(rows), self.max_records)
        ]

    def _failed(self, exc: Exception, unwritten: list[dict[str, Any]]) -> None:
        with self._lock:
            self.failures += 1
            room = max(self.max_pending - len(self._pending), 0)
            kept, lost = unwritten[:room], unwritten[room:]
            self._pending = kept + self._pending
            if self._pending:
                self._oldest = self.clock() - self.max_age_s  # due again after the wait
            self.dropped += len(lost)
            self._retry_at = self.clock() + self.max_age_s
        log.warning(
            "cannot write %d prediction records to %s (%d kept to retry): %s",
            len(unwritten),
            self.store.uri,
            len(kept),
            exc,
        )
