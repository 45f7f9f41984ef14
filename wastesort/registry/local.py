"""A registry in a local folder (the bundled `models/`, a shared drive, a test's tmp dir)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from wastesort.errors import ConcurrentUpdateError, NotFoundError, RegistryError
from wastesort.registry.store import MANIFEST, RegistryStore, etag_of

if TYPE_CHECKING:
    from collections.abc import Iterator


def _umask() -> int:
    """The process umask, read without changing it where /proc tells (else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """temp file -> fsync -> rename: a crash leaves the old file or the new one, never half.

    The file keeps the mode it had (a shared or web-served registry stays readable); a new
    file gets the umask's, like `open()` would give it, not mkstemp's private 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore(RegistryStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise NotFoundError(f"{key!r} points outside the registry")
        return path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # flock is per open file, so threads of one process exclude each other too.
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".manifest.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_manifest(self) -> tuple[bytes, str] | None:
        try:
            data = (self.root / MANIFEST).read_bytes()
        except FileNotFoundError:
            return None
        return data, etag_of(data)

    def write_manifest(self, data: bytes, *, expected_etag: str | None) -> None:
        with self._locked():
            current = self.read_manifest()
            if (current[1] if current else None) != expected_etag:
                raise ConcurrentUpdateError("the manifest changed since it was read")
            write_atomic(self.root / MANIFEST, data)

    def put_new(self, key: str, source: bytes | Path) -> bool:
        dest = self._path(key)
        if dest.exists():
            return False
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot write {key} in {self.uri}: {exc}") from exc
        # Unique per thread too: two threads of one process may write the same key at once.
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}-{threading.get_ident()}")
        if isinstance(source, bytes):
            with open(tmp, "wb") as handle:
                handle.write(source)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        try:
            os.link(tmp, dest)  # fails if another writer created `dest` meanwhile
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"{key} is not in {self.uri}") from None
        except OSError as exc:
            raise RegistryError(f"cannot read {key} in {self.uri}: {exc}") from exc

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        # Walk only the folder the prefix names (`captures/api/2026/` -> that folder).
        folder = self._path(prefix.rpartition("/")[0]) if "/" in prefix else self.root
        if not folder.is_dir():
            return iter(())
        keys = []
        for path in folder.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            hidden = any(part.startswith(".") for part in PurePosixPath(key).parts)
            if not hidden and key.startswith(prefix) and key > start_after and path.is_file():
                keys.append(key)
        return iter(sorted(keys))

    def download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise NotFoundError(f"{key} is not in the registry at {self.uri}") from None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
