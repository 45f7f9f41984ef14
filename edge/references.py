"""A version's reference file on the device: what gives a bin's prediction records their
embedding and image statistics, and its heartbeat a drift verdict.

It is kept in `models/` beside the model (`installed.reference_name`), so a bin restarted
offline still judges drift. It is optional: a missing, corrupt or mismatched reference is
logged and reported in the heartbeat, and the model serves without drift all the same; it is
fetched again on the next polls (a bad network may heal), a few times at most.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from edge.installed import reference_name
from wastesort.artifacts import Choice
from wastesort.classifier import Classifier
from wastesort.errors import ModelError, WastesortError
from wastesort.manifest import ArtifactRef, ModelEntry
from wastesort.reference import Reference
from wastesort.registry import verify_bytes, write_atomic

log = logging.getLogger(__name__)

MAX_FETCHES = 3
"""A version's reference that cannot be had is fetched at most this many times (its install or
boot, then later polls) until the service restarts."""

Loaded = tuple[Reference | None, dict[str, bytes]]
"""The reference (None: the version has none, or it is unusable) and the files to keep in
`models/` (what was fetched now; empty when it was already there)."""


class DeviceReferences:
    """Loads versions' reference files from `models/` or the registry, and remembers which
    could not be had (the heartbeat's `model.reference`)."""

    def __init__(
        self,
        folder: Path,
        fetch: Callable[[ArtifactRef], bytes],
        note: Callable[[str], None],
    ) -> None:
        self.folder = folder
        self._fetch = fetch
        """The registry's verified download (`Registry.fetch_content`'s bytes)."""
        self._note = note
        self.errors: dict[str, str] = {}
        """Why a version's reference is not used, by version."""
        self._fetches: dict[str, int] = {}

    def load(self, entry: ModelEntry) -> Loaded:
        """`entry`'s reference: the copy in `models/` when it is intact, else a fresh download.
        Never raises: an unusable reference is recorded in `errors` and noted."""
        ref = entry.reference
        if ref is None:
            return None, {}
        name = reference_name(ref)
        try:
            kept = self._parse((self.folder / name).read_bytes(), ref)
        except FileNotFoundError:
            pass  # installed before references were kept, or not fetched yet
        except (OSError, WastesortError) as exc:
            log.warning("kept reference %s is unusable (%s); fetching it again", name, exc)
        else:
            self.errors.pop(entry.version, None)
            return kept, {}
        self._fetches[entry.version] = self._fetches.get(entry.version, 0) + 1
        try:
            content = self._fetch(ref)  # size and sha256 checked by the registry
            loaded = Reference.loads(content)
        except (OSError, WastesortError) as exc:
            self.refused(entry, f"cannot load its reference file: {exc}")
            return None, {}
        self.errors.pop(entry.version, None)
        return loaded, {name: content}

    def keep(self, files: dict[str, bytes]) -> None:
        """Write fetched reference files into `models/` now (an installed version's: its
        `state.json` entry already keeps them). Best effort: a full disk costs drift after
        the next offline boot, never the model."""
        for name, content in files.items():
            try:
                write_atomic(self.folder / name, content)
            except OSError as exc:
                log.warning("cannot keep reference %s (%s)", name, exc)

    def classifier(
        self, content: bytes, choice: Choice, reference: Reference | None, num_threads: int | None
    ) -> Classifier:
        """The chosen build as a classifier with `reference`; a reference that does not fit
        the model (another embedding width) is refused for good and the model serves
        without it.

        Raises:
            ModelError: the model itself does not load.
        """
        build = partial(
            Classifier, content, choice.entry, delegate=choice.delegate, num_threads=num_threads
        )
        try:
            return build(reference=reference)
        except ModelError as exc:
            if reference is None:
                raise
            classifier = build()  # raises when the model is at fault
            self.refused(choice.entry, str(exc), final=True)
            return classifier

    def refused(self, entry: ModelEntry, reason: str, *, final: bool = False) -> None:
        """`entry` serves without its reference: it is missing or corrupt (fetched again on
        later polls), or it does not fit the model (`final`: never fetched again)."""
        self.errors[entry.version] = reason
        if final:
            self._fetches[entry.version] = MAX_FETCHES
        self._note(f"model {entry.version} serves without drift: {reason}")

    def retry_due(self, entry: ModelEntry) -> bool:
        """Whether a poll should fetch `entry`'s reference again."""
        return (
            entry.reference is not None
            and entry.version in self.errors
            and self._fetches.get(entry.version, 0) < MAX_FETCHES
        )

    def status(self, entry: ModelEntry | None) -> dict[str, Any]:
        """The heartbeat's `reference` (True: in use, False: the version has one that is not
        usable, None: it has none) and `reference_error` (why not)."""
        if entry is None or entry.reference is None:
            return {"reference": None, "reference_error": None}
        error = self.errors.get(entry.version)
        return {"reference": error is None, "reference_error": error}

    @staticmethod
    def _parse(content: bytes, ref: ArtifactRef) -> Reference:
        verify_bytes(content, ref)  # the core's check, as for the model kept beside it
        return Reference.loads(content)
