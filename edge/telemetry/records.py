"""Prediction records at the bin: queued in the telemetry file, uploaded to `records/<device>/`.

A record (`wastesort.records.make_record`) joins the `records` table of the same SQLite file as
the events (its own connection, WAL), and is uploaded by the same uploader through the same
claim -> put -> complete: a batch holds records of one UTC hour, under the key
`records/<device id>/<yyyy>/<mm>/<dd>/<hh>/<queue id>-<first row>-<last row>.jsonl`, so a retry
after a crash re-sends the same rows under the same key, and the drift reader
(`wastesort.records.read_records`) finds them by hour. After upload the most recent `keep`
records stay in the file (marked uploaded): the heartbeat's drift verdict and
`wastesort drift --current telemetry.sqlite` read them. Waiting records are bounded by
`max_pending`; beyond it the oldest are evicted and counted.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from edge.telemetry.sqlite import Transaction, batch_body, mark_batch, open_wal
from wastesort.record_sources import QUEUE_TABLE
from wastesort.records import record_key

log = logging.getLogger(__name__)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {QUEUE_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hour TEXT NOT NULL,
    body TEXT NOT NULL,
    batch INTEGER,
    uploaded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_waiting ON {QUEUE_TABLE} (uploaded, batch, hour, id);
CREATE TABLE IF NOT EXISTS record_batches (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT);
CREATE TABLE IF NOT EXISTS record_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COUNTERS = ("recorded", "uploaded", "evicted")
_HOUR = "%Y-%m-%dT%H"


class RecordSink(Protocol):
    uri: str

    def put(self, key: str, body: bytes) -> None:
        """Store `body` at `key` (a retry sends the same bytes to the same key)."""
        ...


class HttpRecordSink:
    """POSTs a batch to `<url>/<key>` with its key as `Idempotency-Key`."""

    def __init__(self, url: str, *, timeout_s: float = 20.0) -> None:
        import httpx  # noqa: PLC0415

        self.uri = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s)

    def put(self, key: str, body: bytes) -> None:
        response = self.client.post(
            f"{self.uri}/{key}",
            content=body,
            headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key},
        )
        response.raise_for_status()


def open_record_sink(uri: str | None) -> RecordSink | None:
    """`s3://<capture bucket>` (records go to `records/<device id>/...` at its root, where the
    device role may write them) or an `https://` endpoint; None: records stay on the bin."""
    if not uri:
        return None
    if uri.startswith("s3://"):
        from edge.telemetry.sinks import S3Sink  # noqa: PLC0415

        return S3Sink(uri, captures=True)
    if uri.startswith(("https://", "http://")):
        return HttpRecordSink(uri)
    raise ValueError(f"records.upload_to {uri!r}: expected s3://bucket or https://...")


class RecordQueue:
    """The bin's records in its telemetry file; safe to share between threads."""

    def __init__(
        self, path: str | Path, *, device_id: str, max_pending: int = 20_000, keep: int = 500
    ) -> None:
        self.path = Path(path)
        self.device_id = device_id
        self.max_pending = max_pending
        self.keep = keep
        self._lock = threading.Lock()
        self._db = open_wal(self.path, _SCHEMA)
        with self._lock, self._tx():
            for name in _COUNTERS:
                self._db.execute(
                    "INSERT OR IGNORE INTO record_counters (name, value) VALUES (?, 0)", (name,)
                )
            self._db.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('records_queue_id', ?)",
                (uuid.uuid4().hex[:12],),
            )
        row = self._db.execute("SELECT value FROM meta WHERE name='records_queue_id'").fetchone()
        self.queue_id = row[0]

    def _tx(self) -> Transaction:
        return Transaction(self._db)

    def _bump(self, name: str, delta: int) -> None:
        self._db.execute(
            "UPDATE record_counters SET value = value + ? WHERE name = ?", (delta, name)
        )

    def _pending(self) -> int:
        return int(
            self._db.execute(
                f"SELECT COUNT(*) FROM {QUEUE_TABLE} WHERE uploaded = 0"  # noqa: S608
            ).fetchone()[0]
        )

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record (committed when this returns); the oldest waiting ones beyond
        `max_pending` are evicted and counted.

        Raises:
            sqlite3.Error, OSError: not stored (a full disk); the caller counts it.
        """
        at = datetime.fromisoformat(str(record["at"]).replace("Z", "+00:00")).astimezone(UTC)
        body = json.dumps(record, separators=(",", ":"))
        with self._lock, self._tx():
            self._db.execute(
                f"INSERT INTO {QUEUE_TABLE} (hour, body) VALUES (?, ?)",  # noqa: S608
                (at.strftime(_HOUR), body),
            )
            self._bump("recorded", 1)
            excess = self._pending() - self.max_pending
            if excess > 0:
                gone = self._db.execute(
                    f"DELETE FROM {QUEUE_TABLE} WHERE id IN (SELECT id FROM {QUEUE_TABLE} "  # noqa: S608
                    "WHERE uploaded = 0 AND batch IS NULL ORDER BY id LIMIT ?)",
                    (excess,),
                ).rowcount
                self._bump("evicted", gone)
                log.warning("record queue full (%d): evicted the oldest", self.max_pending)

    def claim(self, batch_size: int) -> tuple[int, str, bytes] | None:
        """The oldest unfinished batch (re-sent as it was), else a new one of one hour's
        records; None when nothing waits. Returns (batch id, object key, JSON-lines body)."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT id, key FROM record_batches ORDER BY id").fetchone()
            if row is None:
                first = self._db.execute(
                    f"SELECT hour FROM {QUEUE_TABLE} WHERE uploaded = 0 AND batch IS NULL "  # noqa: S608
                    "ORDER BY id LIMIT 1"
                ).fetchone()
                if first is None:
                    return None
                ids = [
                    r[0]
                    for r in self._db.execute(
                        f"SELECT id FROM {QUEUE_TABLE} WHERE uploaded = 0 AND batch IS NULL "  # noqa: S608
                        "AND hour = ? ORDER BY id LIMIT ?",
                        (first[0], batch_size),
                    )
                ]
                hour = datetime.strptime(first[0], _HOUR).replace(tzinfo=UTC)
                key = record_key(
                    self.device_id, hour, f"{self.queue_id}-{ids[0]:012d}-{ids[-1]:012d}"
                )
                batch = self._db.execute(
                    "INSERT INTO record_batches (key) VALUES (?)", (key,)
                ).lastrowid
                mark_batch(self._db, QUEUE_TABLE, batch, ids)
                row = (batch, key)
            batch, key = row
            return batch, key, batch_body(self._db, QUEUE_TABLE, batch)

    def complete(self, batch: int) -> int:
        """The sink stored `batch`: mark its rows uploaded, keep only the last `keep` records."""
        with self._lock, self._tx():
            done = self._db.execute(
                f"UPDATE {QUEUE_TABLE} SET uploaded = 1, batch = NULL WHERE batch = ?",  # noqa: S608
                (batch,),
            ).rowcount
            self._db.execute("DELETE FROM record_batches WHERE id = ?", (batch,))
            self._bump("uploaded", done)
            self._db.execute(
                f"DELETE FROM {QUEUE_TABLE} WHERE uploaded = 1 AND id <= "  # noqa: S608
                f"(SELECT id FROM {QUEUE_TABLE} ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.keep,),
            )
        return done

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` records, uploaded or not, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM {QUEUE_TABLE} ORDER BY id DESC LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def stats(self) -> dict[str, int]:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, value FROM record_counters").fetchall())
            depth = self._pending()
        return {"depth": depth, **{name: int(counters[name]) for name in _COUNTERS}}

    def close(self) -> None:
        with self._lock:
            self._db.close()
