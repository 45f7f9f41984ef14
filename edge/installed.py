"""What a device keeps in `<state>/models/`: the installed models and their versions' reference
files (named by content hash, with `state.json` saying which is which), and the temp files an
interrupted write leaves there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wastesort.artifacts import EDGETPU
from wastesort.manifest import ArtifactRef, ModelEntry

log = logging.getLogger(__name__)

TEMP_PATTERNS = (".*.tmp",)
"""`wastesort.registry.write_atomic`'s temp files (`.<name>.<random>.tmp`, beside the file)."""


def file_name(ref: ArtifactRef, variant: str | None) -> str:
    """The name an artifact is kept under in `models/`: its content hash, and the variant."""
    return f"{ref.sha256}{'_' + variant if variant else ''}.tflite"


def reference_name(ref: ArtifactRef) -> str:
    """The name a version's reference file is kept under in `models/`: its content hash."""
    return f"{ref.sha256}.reference.npz"


@dataclass(frozen=True)
class Installed:
    """A model on this device's disk."""

    entry: ModelEntry
    file: str
    variant: str | None = None

    @property
    def files(self) -> set[str]:
        """What this install keeps in `models/`: an Edge TPU build keeps the version's CPU
        build beside it, for a boot without the Coral (no registry needed then), and a
        version with a reference file keeps that, for drift after an offline boot."""
        files = {self.file, self.cpu_file} if self.variant == EDGETPU else {self.file}
        if self.reference_file is not None:  # kept where there is one (older installs: not)
            files.add(self.reference_file)
        return files

    @property
    def reference_file(self) -> str | None:
        """The version's reference file in `models/`, for drift (None: it has none)."""
        ref = self.entry.reference
        return reference_name(ref) if ref is not None else None

    @property
    def cpu_file(self) -> str:
        return file_name(self.entry.artifact, None)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry.model_dump(mode="json"),
            "file": self.file,
            "variant": self.variant,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Installed:
        return cls(ModelEntry.model_validate(data["entry"]), data["file"], data.get("variant"))


def remove_stale_temps(folder: Path, patterns: tuple[str, ...] = TEMP_PATTERNS) -> int:
    """Remove the temp files a power cut or kill left in `folder` mid-write (a model can be
    hundreds of MB); never valid files, and nothing else writes there while this runs (the
    updater's start). Returns how many were removed."""
    removed = 0
    if not folder.is_dir():
        return removed
    for pattern in patterns:
        for stale in folder.glob(pattern):
            if not stale.is_file():
                continue
            log.info("removing an interrupted write: %s", stale)
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def latest_refusals(rejected: dict[str, dict[str, Any]], latest: int) -> dict[str, dict[str, Any]]:
    """`state.json`'s `rejected` records, the `latest` newest first, each with every field
    (`at`, `code`: None for a refusal recorded before refusals had them)."""
    records = sorted(rejected.items(), key=lambda item: item[1].get("at") or 0, reverse=True)
    return {
        version: {
            "reason": record.get("reason"),
            "code": record.get("code"),
            "attempts": record.get("attempts", 1),
            "final": bool(record.get("final")),
            "at": record.get("at"),
        }
        for version, record in records[:latest]
    }
