"""Where a registry's bytes live. The registry logic above never asks which store it has."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

MANIFEST = "manifest.json"


def etag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RegistryStore(ABC):
    """Byte storage with one compare-and-swap object (the manifest) and write-once objects.

    Write-once is the rule that makes artifacts, captures and label events safe to share: a key,
    once written, is never replaced, so readers never see an object change under them and two
    writers of one key cannot both win. Keys are `/`-separated and never start with `/`.
    """

    uri: str
    read_only: bool = False

    @abstractmethod
    def read_manifest(self) -> tuple[bytes, str] | None:
        """The manifest's bytes and a version tag, or None when there is no manifest yet."""

    @abstractmethod
    def write_manifest(self, data: bytes, *, expected_etag: str | None) -> None:
        """Replace the manifest only if it is still at `expected_etag` (None: must not exist).

        Raises:
            ConcurrentUpdateError: another writer got there first; re-read and retry.
        """

    @abstractmethod
    def put_new(self, key: str, source: bytes | Path) -> bool:
        """Store bytes (or a file's bytes) at `key` unless something is already there.

        The check and the write are one step (an S3 conditional put, a hard link), so of two
        writers of one key exactly one gets True.

        Returns:
            True when written, False when `key` already existed (left untouched).

        Raises:
            RegistryError: the store cannot be written (NotSupportedError: it is read-only).
        """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object at `key` (small objects: records, labels, capture images).

        Raises:
            NotFoundError: nothing at `key`.
            RegistryError: the store cannot be read.
        """

    @abstractmethod
    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        """Keys that start with `prefix` and sort after `start_after`, in ascending order.

        The order is the one S3 lists in (UTF-8 bytes, which is also Python's `str` order), so
        a caller resumes a listing by passing the last key it saw as `start_after`. Temporary
        files of a writer in progress are never listed.

        Raises:
            RegistryError: the store cannot be listed (NotSupportedError: it has no listing).
        """

    @abstractmethod
    def download(self, key: str, dest: Path) -> None:
        """Write the object at `key` to `dest` (the caller verifies and renames it).

        Raises:
            NotFoundError: nothing at `key`.
        """

    def local_path(self, key: str) -> Path | None:
        """A path to read `key` in place, for stores that are already on this disk."""
        return None
