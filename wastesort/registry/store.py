"""Where a registry's bytes live. The registry logic above never asks which store it has."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

MANIFEST = "manifest.json"


def etag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RegistryStore(ABC):
    """Byte storage with one compare-and-swap object (the manifest) and write-once artifacts."""

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
    def put_new(self, key: str, source: Path) -> bool:
        """Store a file at `key` unless something is already there.

        Returns:
            True when written, False when `key` already existed (left untouched).
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
