"""What the folder source has already decided, remembered across restarts, and the event ids
that make a decision recognisable when it is sent again.

A watched folder keeps its files: without a memory, every restart decided all of them again,
each time under a new random event id (300 images, 7 restarts: 1,012 events), so nobody
downstream could tell a repeat from a new item. Here a file is known by its path in the folder,
size and mtime (`file_key`; a file rewritten in place is a new item, as one put back is); the
keys decided are kept in `<state>/decided.sqlite`, and each decision's event id is derived from
the device, that key and the model version (`event_id`), so the same file decided by the same
model always carries the same id.

The runner commits a file's key *after* its telemetry event: a kill between the two decides the
file once more after the restart, under the same id, which the queue keeps only once (and a
consumer that already has it de-duplicates) — a decision is never lost, and never sent as new.

Bounded: keys of files no longer in the folder are forgotten (the folder bounds the table), and
beyond `max_entries` the oldest are dropped (a folder that large is decided again, not lost).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

DECIDED_FILE = "decided.sqlite"
MAX_ENTRIES = 100_000
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://wastesort/edge/decision")


def file_key(relative: str, size: int, mtime_ns: int) -> str:
    """A file's identity in a watched folder: where it is, how big, when last written."""
    return f"{relative}\0{size}\0{mtime_ns}"


def file_mtime(key: str) -> float:
    """The mtime (seconds) recorded in a `file_key`: when the photo was written."""
    return int(key.rsplit("\0", 1)[1]) / 1e9


def event_id(device_id: str, key: str, model_version: str) -> str:
    """The same file decided by the same model on the same device: the same id (a uuid5, in
    the 32 hex digits of the random ones)."""
    return uuid.uuid5(_NAMESPACE, f"{device_id}\0{key}\0{model_version}").hex


class DecidedFiles:
    """The set of file keys decided, in one small SQLite file (WAL), mirrored in memory.

    Thread-safe; the source reads it, the runner's loop adds to it (the same thread today).
    """

    def __init__(
        self, path: str | Path, *, durability: str = "normal", max_entries: int = MAX_ENTRIES
    ) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS decided "
                "(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, at REAL NOT NULL)"
            )
            self._keys = {row[0] for row in self._db.execute("SELECT key FROM decided")}
        except BaseException:
            self._db.close()
            raise

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str) -> None:
        """Remember `key` (committed when this returns).

        Raises:
            sqlite3.Error, OSError: not written (a full disk); it is still remembered until
                the process ends.
        """
        with self._lock:
            self._keys.add(key)
            self._db.execute(
                "INSERT OR IGNORE INTO decided (key, at) VALUES (?, ?)", (key, time.time())
            )
            excess = len(self._keys) - self.max_entries
            if excess > 0:
                oldest = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT key FROM decided ORDER BY id LIMIT ?", (excess,)
                    )
                ]
                self._delete(oldest)
                log.warning(
                    "more than %d files decided: forgot the %d oldest", self.max_entries, excess
                )

    def retain(self, present: Iterable[str]) -> None:
        """Forget the keys of files that left the folder (the folder bounds the table)."""
        with self._lock:
            gone = self._keys.difference(present)
            if gone:
                try:
                    self._delete(list(gone))
                except (sqlite3.Error, OSError) as exc:  # forgotten next time instead
                    log.warning("cannot forget %d decided files: %s", len(gone), exc)

    def _delete(self, keys: list[str]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM decided WHERE key = ?", [(k,) for k in keys])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._keys.difference_update(keys)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_decided(state_dir: Path, *, durability: str = "normal") -> DecidedFiles:
    """The folder source's memory. Where its file cannot be opened (a full disk), a memory for
    this run only (logged): the sorting goes on, and after a restart the folder is decided
    again, under the same event ids."""
    try:
        return DecidedFiles(Path(state_dir) / DECIDED_FILE, durability=durability)
    except (sqlite3.Error, OSError) as exc:
        log.error(
            "cannot remember decided files (%s: %s): after a restart the folder is decided again",
            type(exc).__name__,
            exc,
        )
        return DecidedFiles(":memory:")
