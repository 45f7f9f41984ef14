"""The local queue: every decision is committed to one SQLite file (WAL) before it is acted on.

Why it cannot lose or duplicate anything:
- A committed transaction survives the process being killed (`durability: full` adds an
  fsync per commit, which also survives a power cut).
- Uploading is claim -> put -> complete. A claim records the batch (its rows and its object
  key) in the database before anything is sent; the rows are deleted only after the sink
  acknowledged. A crash in between re-sends the *same* rows under the *same* key, which the
  store overwrites with identical bytes, so retries are idempotent. Every event also
  carries a unique `event_id` for consumers that want to check: random, or given by the
  caller (a file's decision, `edge.decided.event_id`), in which case an event already queued
  under that id is not queued twice.
- The queue is bounded: beyond `max_events` the oldest unclaimed events are evicted, counted,
  logged, and reported upstream as an `evictions` event that is itself queued and uploaded.
- Captures (`edge.capture`) ride in the same file, committed with their decision's event, kept
  once per capture id, bounded by `max_captures` the same way (a `capture_evictions` event), and
  uploaded one at a time by the same claim -> put -> complete.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.capture import QueuedCapture
from edge.telemetry.sqlite import Transaction, batch_body, mark_batch, open_wal

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    batch INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_batch ON events (batch);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    capture_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    jpeg BLOB NOT NULL,
    record BLOB NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COUNTERS = ("depth", "recorded", "evicted_total", "evicted_unreported", "uploaded_total")
_CAPTURE_COUNTERS = tuple(f"captures_{name}" for name in _COUNTERS)
_EVICTIONS = (("", "evictions"), ("captures_", "capture_evictions"))
"""(counter prefix, the kind of the event that reports its evictions upstream)."""


def utc_iso(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TelemetryQueue:
    """A bounded, crash-safe FIFO of JSON events in one SQLite file (WAL mode).

    Safe to share between threads (one connection, one lock; the network is never touched
    while the lock is held).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device_id: str,
        max_events: int = 200_000,
        durability: str = "normal",
        max_captures: int | None = None,
    ) -> None:
        """
        Args:
            max_captures: the bound for captures; None when capture is off (the heartbeat
                then reports no `captures`).
        """
        self.path = Path(path)
        self.device_id = device_id
        self.max_events = max_events
        self.max_captures = max_captures
        self._lock = threading.Lock()
        self._db = open_wal(self.path, _SCHEMA, durability=durability)
        with self._tx():
            for name in _COUNTERS + _CAPTURE_COUNTERS:
                self._db.execute(
                    "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (name,)
                )
            # A random id per queue file: object keys stay unique even if the file is lost
            # and the row ids start again from 1.
            self._db.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('queue_id', ?)",
                (uuid.uuid4().hex[:12],),
            )
        self.queue_id = self._db.execute("SELECT value FROM meta WHERE name='queue_id'").fetchone()[
            0
        ]
        self._last_eviction_log = 0.0

    def _tx(self) -> Transaction:
        return Transaction(self._db)

    def _bump(self, name: str, delta: int) -> None:
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (delta, name))

    # --- writing -----------------------------------------------------------------------------

    def record(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        capture: QueuedCapture | None = None,
    ) -> str:
        """Queue one event (committed when this returns); returns its `event_id`.

        Args:
            event: the event's fields.
            event_id: a deterministic id (a decision sent again after a crash); an event
                still queued under it is kept as it is, not queued twice. Default: random.
            capture: the decision's capture, committed in the same transaction (and, like
                the event, kept once per capture id).
        """
        body = {
            "event_id": event_id or uuid.uuid4().hex,
            "kind": "decision",
            "at": utc_iso(),
            "device_id": self.device_id,
            **event,
        }
        with self._lock, self._tx():
            if self._insert(body):
                self._evict_over_bound()
            else:
                log.debug("event %s is already queued; not queued again", body["event_id"])
            if capture is not None:
                self._insert_capture(capture)
        return body["event_id"]

    def _insert_capture(self, capture: QueuedCapture) -> None:
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO captures (capture_id, key, jpeg, record) VALUES (?, ?, ?, ?)",
            (capture.capture_id, capture.key, capture.jpeg, capture.record),
        ).rowcount
        if not inserted:
            return
        self._bump("captures_depth", 1)
        self._bump("captures_recorded", 1)
        excess = self._counter("captures_depth") - (self.max_captures or 0)
        if self.max_captures is None or excess <= 0:
            return
        gone = self._db.execute(
            "DELETE FROM captures WHERE id IN "
            "(SELECT id FROM captures WHERE claimed = 0 ORDER BY id LIMIT ?)",
            (excess,),
        ).rowcount
        self._bump("captures_depth", -gone)
        self._bump("captures_evicted_total", gone)
        self._bump("captures_evicted_unreported", gone)
        log.warning(
            "capture queue full (%d): evicted the oldest; %d evicted so far",
            self.max_captures,
            self._counter("captures_evicted_total"),
        )

    def _insert(self, body: dict[str, Any]) -> bool:
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO events (event_id, body) VALUES (?, ?)",
            (body["event_id"], json.dumps(body, separators=(",", ":"))),
        ).rowcount
        if inserted:
            self._bump("depth", 1)
            self._bump("recorded", 1)
        return bool(inserted)

    def _evict_over_bound(self) -> None:
        depth = self._counter("depth")
        excess = depth - self.max_events
        if excess <= 0:
            return
        gone = self._db.execute(
            "DELETE FROM events WHERE id IN "
            "(SELECT id FROM events WHERE batch IS NULL ORDER BY id LIMIT ?)",
            (excess,),
        ).rowcount
        self._bump("depth", -gone)
        self._bump("evicted_total", gone)
        self._bump("evicted_unreported", gone)
        now = time.monotonic()
        if now - self._last_eviction_log > 60:
            self._last_eviction_log = now
            log.warning(
                "telemetry queue full (%d events): evicted the oldest; %d evicted so far",
                self.max_events,
                self._counter("evicted_total"),
            )

    def _counter(self, name: str) -> int:
        return int(
            self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]
        )

    # --- uploading ---------------------------------------------------------------------------

    def claim(self, batch_size: int) -> tuple[int, str, bytes] | None:
        """The oldest unfinished batch (re-sent as it was), else a new one; None when empty.

        Returns:
            (batch id, object key, JSON-lines body).
        """
        with self._lock, self._tx():
            row = self._db.execute("SELECT id, key FROM batches ORDER BY id LIMIT 1").fetchone()
            if row is None:
                for prefix, kind in _EVICTIONS:
                    unreported = self._counter(f"{prefix}evicted_unreported")
                    if unreported:
                        self._insert(
                            {
                                "event_id": uuid.uuid4().hex,
                                "kind": kind,
                                "at": utc_iso(),
                                "device_id": self.device_id,
                                "count": unreported,
                                "evicted_total": self._counter(f"{prefix}evicted_total"),
                            }
                        )
                        self._bump(f"{prefix}evicted_unreported", -unreported)
                ids = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT id FROM events WHERE batch IS NULL ORDER BY id LIMIT ?",
                        (batch_size,),
                    )
                ]
                if not ids:
                    return None
                day = datetime.now(UTC).strftime("%Y/%m/%d")
                span = f"{ids[0]:012d}-{ids[-1]:012d}"
                key = f"{self.device_id}/events/{day}/{self.queue_id}-{span}.jsonl"
                batch = self._db.execute(
                    "INSERT INTO batches (key, created) VALUES (?, ?)", (key, time.time())
                ).lastrowid
                mark_batch(self._db, "events", batch, ids)
                row = (batch, key)
            batch, key = row
            return batch, key, batch_body(self._db, "events", batch)

    def complete(self, batch: int) -> int:
        """The sink acknowledged `batch`: drop its rows. Returns how many."""
        with self._lock, self._tx():
            gone = self._db.execute("DELETE FROM events WHERE batch = ?", (batch,)).rowcount
            self._db.execute("DELETE FROM batches WHERE id = ?", (batch,))
            self._bump("depth", -gone)
            self._bump("uploaded_total", gone)
        return gone

    def claim_capture(self) -> tuple[int, QueuedCapture] | None:
        """The oldest capture (claimed, so no eviction takes it mid-upload), or None."""
        with self._lock, self._tx():
            row = self._db.execute(
                "SELECT id, capture_id, key, jpeg, record FROM captures ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE captures SET claimed = 1 WHERE id = ?", (row[0],))
        return row[0], QueuedCapture(row[1], row[2], bytes(row[3]), bytes(row[4]))

    def complete_capture(self, row: int) -> int:
        """The sink stored the capture claimed as `row`: drop it. Returns 1 (0 if gone)."""
        with self._lock, self._tx():
            gone = self._db.execute("DELETE FROM captures WHERE id = ?", (row,)).rowcount
            self._bump("captures_depth", -gone)
            self._bump("captures_uploaded_total", gone)
        return gone

    def pending_captures(self) -> list[QueuedCapture]:
        """Every queued capture, oldest first (tests and `edge status`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT capture_id, key, jpeg, record FROM captures ORDER BY id"
            ).fetchall()
        return [QueuedCapture(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows]

    # --- reporting ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            oldest = self._db.execute("SELECT body FROM events ORDER BY id LIMIT 1").fetchone()
        stats = {
            "depth": counters["depth"],
            "recorded": counters["recorded"],
            "uploaded": counters["uploaded_total"],
            "evicted": counters["evicted_total"],
            "oldest_at": json.loads(oldest[0])["at"] if oldest else None,
        }
        if self.max_captures is not None:
            stats["captures"] = {
                name: counters[f"captures_{counter}"]
                for name, counter in (
                    ("depth", "depth"),
                    ("recorded", "recorded"),
                    ("uploaded", "uploaded_total"),
                    ("evicted", "evicted_total"),
                )
            }
        return stats

    def pending(self) -> list[dict[str, Any]]:
        """Every queued event, oldest first (tests and `edge status`)."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM events ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
