"""Publish, resolve, promote and roll back models over any `RegistryStore`.

Artifacts are written first and never overwritten; the manifest is written last, by
compare-and-swap, so a reader sees either the old registry or the new one, and two writers
at once never lose each other's update.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wastesort.dataset import sha256_file  # one owner, stdlib only
from wastesort.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    VersionExistsError,
)
from wastesort.manifest import (
    Alias,
    AliasEvent,
    ArtifactRef,
    GoldenItem,
    Manifest,
    ModelEntry,
    check_alias,
    utcnow,
)
from wastesort.registry.local import LocalStore
from wastesort.registry.rollout import rollback_target, stage
from wastesort.registry.store import RegistryStore

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 25


def default_cache_dir() -> Path:
    """WASTESORT_CACHE_DIR, else ~/.cache/wastesort (Lambda sets it under /tmp)."""
    configured = os.environ.get("WASTESORT_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "wastesort"


def actor() -> str:
    """Who is changing the registry, for the audit trail: WASTESORT_ACTOR or user@host."""
    if configured := os.environ.get("WASTESORT_ACTOR"):
        return configured
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def verify_bytes(data: bytes, ref: ArtifactRef) -> None:
    """Raise IntegrityError unless `data` has the size and sha256 that `ref` records."""
    if len(data) != ref.size:
        raise IntegrityError(
            f"{ref.path}: {len(data)} bytes, the manifest records {ref.size} (truncated?)"
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        raise IntegrityError(
            f"{ref.path}: sha256 {actual[:12]}... does not match "
            f"the manifest's {ref.sha256[:12]}..."
        )


def _verified(path: Path, ref: ArtifactRef) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{ref.path} is in the manifest but missing on disk") from None
    verify_bytes(data, ref)
    return data


@dataclass(frozen=True)
class GoldenSample:
    """An image to publish in a version's golden set."""

    name: str
    data: bytes
    expected_class: str
    scores: dict[str, float] = field(default_factory=dict)


class Registry:
    def __init__(self, store: RegistryStore, *, cache_dir: str | Path | None = None) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()

    @classmethod
    def from_uri(cls, uri: str | Path, **kwargs: Any) -> Registry:
        """A local folder (optionally `file://`), `s3://bucket/prefix`, or a read-only
        `https://` base URL (manifest.json and artifacts beneath it)."""
        text = str(uri)
        if text.startswith("s3://"):
            from wastesort.registry.s3 import S3Store  # noqa: PLC0415

            return cls(S3Store(text), **kwargs)
        if text.startswith(("https://", "http://")):
            from wastesort.registry.http import HttpStore, is_allowed_url  # noqa: PLC0415

            if not is_allowed_url(text):
                raise RegistryError(f"{text}: registries are read over https only")
            return cls(HttpStore(text), **kwargs)
        return cls(LocalStore(text.removeprefix("file://")), **kwargs)

    @property
    def uri(self) -> str:
        return self.store.uri

    # --- reading -----------------------------------------------------------------------------

    def _read(self) -> tuple[Manifest, str | None]:
        found = self.store.read_manifest()
        if found is None:
            return Manifest(), None
        raw, etag = found
        return Manifest.parse(raw), etag

    def manifest(self) -> Manifest:
        manifest, etag = self._read()
        if etag is None:
            raise RegistryError(f"no registry at {self.uri} (manifest.json is missing)")
        return manifest

    def resolve(self, ref: str | None = None, device_id: str | None = None) -> ModelEntry:
        """The entry an alias or version id names (default: `production`); during a rollout
        the new version only for a `device_id` in the cohort (`Manifest.resolve`)."""
        return self.manifest().resolve(ref, device_id)

    def history(self, alias: str | None = None) -> list[tuple[str, AliasEvent]]:
        """(alias, event) pairs, oldest first; one alias or all of them."""
        aliases = self.manifest().aliases
        events = [
            (name, event)
            for name, state in aliases.items()
            if alias in (None, name)
            for event in state.history
        ]
        if alias is not None and alias not in aliases:
            raise RegistryError(f"no alias {alias!r} (aliases: {', '.join(aliases) or 'none'})")
        return sorted(events, key=lambda pair: pair[1].at)

    # --- fetching, verified ------------------------------------------------------------------

    def fetch_ref(self, ref: ArtifactRef) -> Path:
        """A verified local copy of `ref`: read in place for local stores, else cached."""
        return self.fetch_content(ref)[0]

    def fetch_content(self, ref: ArtifactRef) -> tuple[Path, bytes]:
        """`ref`'s bytes, verified, and the file they were read from.

        Loaders use these bytes rather than reading the file again: what they load is what
        was checked. Downloads land in the cache as temp file -> fsync -> verify -> rename,
        so a crash or a bad download never leaves a file that later looks valid.
        """
        local = self.store.local_path(ref.path)
        if local is not None:
            return local, _verified(local, ref)
        suffix = Path(ref.path).suffix
        cached = self.cache_dir / f"{ref.sha256}{suffix}"
        if cached.exists():
            try:
                return cached, _verified(cached, ref)
            except IntegrityError:
                log.warning("cached %s is corrupt; downloading it again", cached)
                cached.unlink(missing_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=".download-", suffix=suffix)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            self.store.download(ref.path, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            data = _verified(tmp, ref)
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached, data

    def fetch(self, entry: ModelEntry, variant: str | None = None) -> Path:
        """The verified model file of `entry` (or of an extra variant such as `edgetpu`)."""
        ref = entry.extra_artifacts[variant] if variant else entry.artifact
        return self.fetch_ref(ref)

    # --- writing -----------------------------------------------------------------------------

    def update(self, change: Callable[[Manifest], None]) -> Manifest:
        """Apply `change` to the latest manifest and write it by compare-and-swap, retrying."""
        for attempt in range(_MAX_ATTEMPTS):
            manifest, etag = self._read()
            was = manifest.schema_version if etag is not None else 1
            change(manifest)
            manifest.updated_at = utcnow()
            data = manifest.dumps()  # schema 1 unless something of schema 2 is used
            try:
                self.store.write_manifest(data, expected_etag=etag)
            except ConcurrentUpdateError:
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # noqa: S311
                continue
            if manifest.schema_version > was:  # back down to 1 every reader reads it again
                log.warning(
                    "%s: manifest schema %d -> %d (%s); readers older than schema %d refuse it",
                    self.uri,
                    was,
                    manifest.schema_version,
                    "; ".join(f"{k}: {', '.join(v)}" for k, v in manifest.schema_needs().items()),
                    manifest.schema_version,
                )
            return manifest
        raise ConcurrentUpdateError(
            f"gave up after {_MAX_ATTEMPTS} attempts: the manifest at {self.uri} keeps changing"
        )

    def _upload(self, key: str, source: Path) -> ArtifactRef:
        ref = ArtifactRef(path=key, sha256=sha256_file(source), size=source.stat().st_size)
        if not self.store.put_new(key, source):
            # Already there: fine only if it is the very same bytes (a retried publish).
            try:
                existing = self.fetch_ref(ref)
            except IntegrityError:
                raise VersionExistsError(
                    f"{key} already exists in {self.uri} with other content; "
                    "published artifacts are immutable, publish under a new version id"
                ) from None
            log.info("%s was already uploaded with the same content", existing)
        return ref

    def publish(
        self,
        model_path: str | Path,
        *,
        version: str,
        golden: Sequence[GoldenSample] = (),
        extra_files: dict[str, Path] | None = None,
        aliases: Sequence[str] = (),
        signing_key: bytes | str | Path | None = None,
        reference: str | Path | None = None,
        **fields: Any,
    ) -> ModelEntry:
        """Upload a model (and its golden set, variants and reference), then add it to the
        manifest. The manifest stays schema 1 unless the entry uses schema 2 (named `outputs`,
        a `reference`).

        Args:
            model_path: the `.tflite` file.
            version: a new, unique version id.
            golden: known images with their expected answers.
            extra_files: variants such as `{"edgetpu": path}`.
            aliases: aliases to point at the new version once it is listed.
            signing_key: an ed25519 private key (PEM) to sign the entry with.
            reference: the version's reference file (`wastesort.reference`), stored as
                `reference.npz` and covered by the entry's sha256 and signature.
            **fields: the other `ModelEntry` fields (labels, input, metrics, ...).

        Raises:
            VersionExistsError: `version` is already published.
        """
        ModelEntry.check_version(version)  # before anything is uploaded under its name
        for alias in aliases:
            check_alias(alias)
        current, _ = self._read()
        if version in current.versions:
            raise VersionExistsError(f"version {version!r} is already published in {self.uri}")
        base = f"artifacts/{version}"
        model_path = Path(model_path)
        entry = ModelEntry(
            version=version,
            artifact=self._upload(f"{base}/model.tflite", model_path),
            extra_artifacts={
                name: self._upload(f"{base}/{Path(path).name}", Path(path))
                for name, path in (extra_files or {}).items()
            },
            golden_set=[
                self._upload_golden(f"{base}/golden/{i:03d}-", sample)
                for i, sample in enumerate(golden)
            ],
            reference=(
                self._upload(f"{base}/reference.npz", Path(reference)) if reference else None
            ),
            **fields,
        )
        if signing_key is not None:
            from wastesort.signing import sign  # noqa: PLC0415

            entry = sign(entry, signing_key)
        who = actor()

        def add(manifest: Manifest) -> None:
            if version in manifest.versions:
                raise VersionExistsError(f"version {version!r} was published meanwhile")
            manifest.versions[version] = entry
            for alias in aliases:
                _move(manifest, alias, version, by=who, action="promote", reason="publish")

        self.update(add)
        return entry

    def _upload_golden(self, prefix: str, sample: GoldenSample) -> GoldenItem:
        # Numbered: two classes' golden images may share a file name.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(sample.name).name
            path.write_bytes(sample.data)
            ref = self._upload(f"{prefix}{path.name}", path)
        return GoldenItem(image=ref, expected_class=sample.expected_class, scores=sample.scores)

    def promote(
        self,
        alias: str,
        version: str,
        *,
        by: str | None = None,
        reason: str | None = None,
        rollout: float | None = None,
        force: bool = False,
        pilots: Sequence[str] = (),
    ) -> Manifest:
        """Point `alias` at `version`, recording who moved it from where. With `rollout` (a
        percentage) only that share of devices gets it first, and the `pilots` device ids
        whatever their share; 100 completes the rollout; `force` starts a first one on a
        schema-1 registry (`wastesort.registry.rollout.stage`)."""
        if pilots and rollout is None:
            raise RegistryError("pilot devices go with a rollout", code="rollout_refused")
        who = by or actor()

        def change(m: Manifest) -> None:
            staged = rollout is not None and stage(
                m, alias, version, rollout, by=who, reason=reason, force=force, pilots=pilots
            )
            if not staged:
                _move(m, alias, version, by=who, action="promote", reason=reason)

        return self.update(change)

    def rollback(
        self,
        alias: str,
        *,
        by: str | None = None,
        reason: str | None = None,
        rollout_of: str | None = None,
    ) -> str:
        """Point `alias` back at the version it was promoted from (during a rollout: at the
        stable version, ending the rollout); returns that version. With `rollout_of`, only a
        rollout of that version still in progress is rolled back."""
        who = by or actor()
        target: list[str] = []

        def back(manifest: Manifest) -> None:
            state = manifest.aliases.get(alias)
            if state is None:
                raise RegistryError(f"no alias {alias!r} to roll back")
            previous, why = rollback_target(alias, state, rollout_of, reason)
            target[:] = [previous]
            _move(manifest, alias, previous, by=who, action="rollback", reason=why)

        self.update(back)
        return target[0]


def _move(
    manifest: Manifest, alias: str, version: str, *, by: str, action: str, reason: str | None
) -> None:
    manifest.entry(version)  # raises for an unknown version
    check_alias(alias)
    if alias in manifest.versions:
        raise RegistryError(f"{alias!r} is a version id; pick another alias name")
    state = manifest.aliases.get(alias)
    previous = state.version if state else None
    if state is not None and state.rollout is not None and action == "promote":
        stage(manifest, alias, version, 100, by=by, reason=reason)  # completes it, or refuses
        return
    if previous == version:  # already there: no event, so a rollback never "undoes" a no-op
        return
    event = AliasEvent(
        by=by, action=action, from_version=previous, to_version=version, reason=reason
    )
    if state is None:
        manifest.aliases[alias] = Alias(version=version, history=[event])
    else:
        state.version, state.rollout = version, None
        state.history.append(event)
