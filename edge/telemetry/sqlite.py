"""The telemetry file's SQLite plumbing: one WAL connection per table set, and its transactions.

The event queue (`edge.telemetry.queue`) and the record queue (`edge.telemetry.records`) share
one file through their own connections; both open it the same way and commit the same way.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_wal(path: Path, schema: str, *, durability: str = "normal") -> sqlite3.Connection:
    """Open (creating its folder) `path` in WAL mode, in autocommit, and apply `schema`.

    Args:
        path: the SQLite file.
        schema: `CREATE ... IF NOT EXISTS` statements (idempotent; run as one script).
        durability: `full` fsyncs every commit (survives a power cut); else `normal`.

    Returns:
        A connection any thread may use: the caller serializes it with its own lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)  # executescript commits on its own
    return db


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def mark_batch(db: sqlite3.Connection, table: str, batch: int, ids: list[int]) -> None:
    """Put rows `ids` of `table` (one of the queues' own tables) into `batch`."""
    marks = ",".join("?" * len(ids))
    db.execute(f"UPDATE {table} SET batch = ? WHERE id IN ({marks})", (batch, *ids))  # noqa: S608


def batch_body(db: sqlite3.Connection, table: str, batch: int) -> bytes:
    """The `body` of every row of `batch`, in order, as JSON lines: the bytes a claim sends,
    the same on every retry."""
    rows = db.execute(f"SELECT body FROM {table} WHERE batch = ? ORDER BY id", (batch,))  # noqa: S608
    return ("\n".join(r[0] for r in rows) + "\n").encode()
