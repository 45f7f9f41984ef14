"""Offline-first telemetry: every decision goes to a local SQLite queue, batches go up when
the network is there.

Why it cannot lose or duplicate anything:
- An event is committed to the WAL before the decision is acted on; a committed transaction
  survives the process being killed (`durability: full` adds an fsync per commit, which
  also survives a power cut).
- Uploading is claim -> put -> complete. A claim records the batch (its rows and its object
  key) in the database before anything is sent; the rows are deleted only after the sink
  acknowledged. A crash in between re-sends the *same* rows under the *same* key, which the
  store overwrites with identical bytes, so retries are idempotent. Every event also
  carries a unique `event_id` for consumers that want to check.
- The queue is bounded: beyond `max_events` the oldest unclaimed events are evicted, counted,
  logged, and reported upstream as an `evictions` event that is itself queued and uploaded.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

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
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COUNTERS = ("depth", "recorded", "evicted_total", "evicted_unreported", "uploaded_total")


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
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self.max_events = max_events
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)  # idempotent; executescript commits on its own
        with self._tx():
            for name in _COUNTERS:
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

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _bump(self, name: str, delta: int) -> None:
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (delta, name))

    # --- writing -----------------------------------------------------------------------------

    def record(self, event: dict[str, Any]) -> str:
        """Queue one event (committed when this returns); returns its `event_id`."""
        body = {
            "event_id": uuid.uuid4().hex,
            "kind": "decision",
            "at": utc_iso(),
            "device_id": self.device_id,
            **event,
        }
        with self._lock, self._tx():
            self._insert(body)
            self._evict_over_bound()
        return body["event_id"]

    def _insert(self, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO events (event_id, body) VALUES (?, ?)",
            (body["event_id"], json.dumps(body, separators=(",", ":"))),
        )
        self._bump("depth", 1)
        self._bump("recorded", 1)

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
                unreported = self._counter("evicted_unreported")
                if unreported:
                    self._insert(
                        {
                            "event_id": uuid.uuid4().hex,
                            "kind": "evictions",
                            "at": utc_iso(),
                            "device_id": self.device_id,
                            "count": unreported,
                            "evicted_total": self._counter("evicted_total"),
                        }
                    )
                    self._bump("evicted_unreported", -unreported)
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
                self._db.execute(
                    f"UPDATE events SET batch = ? WHERE id IN ({','.join('?' * len(ids))})",  # noqa: S608
                    (batch, *ids),
                )
                row = (batch, key)
            batch, key = row
            bodies = [
                r[0]
                for r in self._db.execute(
                    "SELECT body FROM events WHERE batch = ? ORDER BY id", (batch,)
                )
            ]
        return batch, key, ("\n".join(bodies) + "\n").encode()

    def complete(self, batch: int) -> int:
        """The sink acknowledged `batch`: drop its rows. Returns how many."""
        with self._lock, self._tx():
            gone = self._db.execute("DELETE FROM events WHERE batch = ?", (batch,)).rowcount
            self._db.execute("DELETE FROM batches WHERE id = ?", (batch,))
            self._bump("depth", -gone)
            self._bump("uploaded_total", gone)
        return gone

    # --- reporting ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            oldest = self._db.execute("SELECT body FROM events ORDER BY id LIMIT 1").fetchone()
        return {
            "depth": counters["depth"],
            "recorded": counters["recorded"],
            "uploaded": counters["uploaded_total"],
            "evicted": counters["evicted_total"],
            "oldest_at": json.loads(oldest[0])["at"] if oldest else None,
        }

    def pending(self) -> list[dict[str, Any]]:
        """Every queued event, oldest first (tests and `edge status`)."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM events ORDER BY id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


# --- sinks -----------------------------------------------------------------------------------


class Sink(Protocol):
    uri: str

    def put(self, key: str, body: bytes) -> None:
        """Store `body` at `key`, replacing whatever is there (retries resend the same)."""
        ...

    def put_heartbeat(self, device_id: str, body: bytes) -> None: ...


DEVICE_PREFIX = "telemetry"
"""The device role may write only under `telemetry/<thing name>/` (infra/constructs/devices.py)."""


class S3Sink:
    """Batches at `s3://bucket/prefix/<device id>/events/...`, the latest heartbeat at
    `s3://bucket/prefix/<device id>/heartbeat.json`: everything a device writes is under its
    own name, which is what the device role allows (`telemetry/<thing name>/*`, infra)."""

    def __init__(self, uri: str, *, client: Any = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = uri
        if self.prefix.rpartition("/")[2] != DEVICE_PREFIX:
            log.warning(
                "telemetry.upload_to %s: the device role may write only under "
                "s3://<telemetry bucket>/%s/<device id>/; uploads here will be denied",
                uri,
                DEVICE_PREFIX,
            )
        self._client = client
        self._client_lock = threading.Lock()  # the uploader and the heartbeat share it

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3  # noqa: PLC0415
                from botocore.config import Config  # noqa: PLC0415

                # Short timeouts and no SDK retries: the uploader owns backoff.
                self._client = boto3.client(
                    "s3",
                    config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 1}),
                )
            return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=body,
            ContentType="application/x-ndjson",
        )

    def put_heartbeat(self, device_id: str, body: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(f"{device_id}/heartbeat.json"),
            Body=body,
            ContentType="application/json",
        )


class HttpSink:
    """POSTs batches to `<url>/events` with an `Idempotency-Key` (the batch key)."""

    def __init__(self, url: str, *, timeout_s: float = 20.0) -> None:
        import httpx  # noqa: PLC0415

        self.uri = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s)

    def put(self, key: str, body: bytes) -> None:
        response = self.client.post(
            f"{self.uri}/events",
            content=body,
            headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key},
        )
        response.raise_for_status()

    def put_heartbeat(self, device_id: str, body: bytes) -> None:
        response = self.client.post(
            f"{self.uri}/heartbeats/{device_id}",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()


def open_sink(uri: str | None) -> Sink | None:
    if not uri:
        return None
    if uri.startswith("s3://"):
        return S3Sink(uri)
    if uri.startswith(("https://", "http://")):
        return HttpSink(uri)
    raise ValueError(f"telemetry.upload_to {uri!r}: expected s3://bucket/prefix or https://...")


def backoff_delay(
    failures: int, *, base: float, cap: float, rng: Callable[[float, float], float] | None = None
) -> float:
    """Exponential backoff with jitter: half the step fixed, half random ("equal jitter"),
    so a fleet that lost the network together does not come back in lockstep."""
    step = min(cap, base * 2 ** max(0, failures - 1))
    uniform = rng or random.uniform
    return step / 2 + uniform(0, step / 2)


class Uploader:
    """Drains the queue into a sink, backing off while the sink is unreachable."""

    def __init__(
        self,
        queue: TelemetryQueue,
        sink: Sink,
        *,
        batch_size: int = 500,
        interval_s: float = 60.0,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 900.0,
    ) -> None:
        self.queue = queue
        self.sink = sink
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.failures = 0
        self.last_error: str | None = None
        self.last_upload_at: str | None = None

    def flush(self, deadline: float | None = None) -> int:
        """Upload until the queue is empty (or `deadline`, a monotonic time, passes).

        Returns:
            events uploaded. Raises whatever the sink raised, after nothing was lost.
        """
        sent = 0
        while deadline is None or time.monotonic() < deadline:
            claimed = self.queue.claim(self.batch_size)
            if claimed is None:
                break
            batch, key, body = claimed
            self.sink.put(key, body)
            sent += self.queue.complete(batch)
            self.last_upload_at = utc_iso()
        return sent

    def attempt(self) -> float:
        """One upload round; returns how long to wait before the next."""
        try:
            sent = self.flush()
        except Exception as exc:  # any network/SDK failure: back off, keep the events
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            delay = backoff_delay(self.failures, base=self.backoff_base_s, cap=self.backoff_max_s)
            log.warning(
                "telemetry upload failed (%d in a row), retrying in %.0fs: %s",
                self.failures,
                delay,
                self.last_error,
            )
            return delay
        if sent:
            log.info("uploaded %d telemetry events to %s", sent, self.sink.uri)
        self.failures = 0
        return self.interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.attempt()
            stop.wait(delay)
