"""Where prediction records are read from besides a store's hour folders: a bin's telemetry
queue file, and the store a `--current` location names (`wastesort drift`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wastesort.records import RECORDS_PREFIX, RecordError, parse_lines

if TYPE_CHECKING:
    from wastesort.registry.store import RegistryStore


# --- the edge's queue file ---------------------------------------------------------------------

QUEUE_TABLE = "records"
"""The table of prediction records in a bin's telemetry queue file (`telemetry.sqlite`, written
by `edge.telemetry.records.RecordQueue`): one JSON record a row in `body`, oldest first by `id`."""


def read_queue_file(path: str | Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The records held in a bin's telemetry queue file (the last `limit`, oldest first): those
    waiting to be uploaded and the most recent ones already uploaded, read-only.

    Raises:
        RecordError: not a telemetry queue file with records.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path} is not a file")
    query = f"SELECT body FROM {QUEUE_TABLE} ORDER BY id DESC"  # noqa: S608 (a constant)
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute(query + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
            bodies = [r[0] for r in rows.fetchall()]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise RecordError(f"{path} holds no prediction records: {exc}") from None
    return parse_lines("\n".join(reversed(bodies)).encode(), where=str(path))


# --- where `wastesort drift --current` finds records ----------------------------------------------

SQLITE_MAGIC = b"SQLite format 3\x00"


def is_queue_file(path: str | Path) -> bool:
    """A SQLite file (a bin's `telemetry.sqlite`), by its header."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def records_store(location: str) -> RegistryStore | None:
    """The store whose `records/` prefix `location` names: `s3://bucket[/prefix]/records`, a
    folder named `records`, or the store root above it (`s3://bucket[/prefix]`, a folder
    holding `records/`); None for a local folder without records (a folder of images)."""
    if location.startswith("s3://"):
        from wastesort.registry.s3 import S3Store  # noqa: PLC0415

        root = location.rstrip("/")
        if root.rpartition("/")[2] == RECORDS_PREFIX and root.count("/") > 2:
            root = root.rpartition("/")[0]
        return S3Store(root)
    from wastesort.registry.local import LocalStore  # noqa: PLC0415

    path = Path(location.removeprefix("file://"))
    if path.name == RECORDS_PREFIX and path.is_dir():
        return LocalStore(path.parent)
    if (path / RECORDS_PREFIX).is_dir():
        return LocalStore(path)
    return None
