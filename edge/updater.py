"""Over-the-air model updates that cannot brick a bin.

The device keeps its models in `<state>/models/`: the file of the model it serves and of the
last known good one before it, named by sha256, plus `state.json` saying which is which.
When the alias in the registry moves, the new version is downloaded (temp file, fsync,
verify, rename: a power cut leaves only a stray temp file), its sha256 and (with a fleet key)
its ed25519 signature are checked, it is loaded and replayed on its golden set, and only
then is `state.json` replaced (atomically) and the runner handed the new classifier, which
it swaps in between two frames. Any failure leaves the old model serving; a model that then
fails at run time is rolled back to the last known good one. Reference files: `edge.references`.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import ModelConfig
from edge.installed import Installed, file_name, latest_refusals, remove_stale_temps
from edge.references import DeviceReferences
from wastesort import artifacts, golden
from wastesort.artifacts import EDGETPU, Choice
from wastesort.classifier import Classifier, default_model_uri
from wastesort.errors import ModelError, RegistryError, SignatureError, WastesortError
from wastesort.manifest import ArtifactRef, ModelEntry
from wastesort.reference import Reference
from wastesort.registry import Registry, write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_ATTEMPTS = 3
"""Integrity failures may be a bad network: a version is retried this many polls."""
REFUSALS_REPORTED = 5
"""The heartbeat says why the latest this many versions were refused (it stays small)."""


class SelfTestError(ModelError):
    code = "self_test_failed"


Prepared = tuple[Classifier, Installed, dict[str, bytes]]
"""A verified, self-tested model, what it installs, and its files' bytes by name."""


class Updater:
    """Owns which model this device serves. Thread-safe between the runner and its poller."""

    def __init__(
        self,
        config: ModelConfig,
        state_dir: Path,
        *,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.time,
        device_id: str | None = None,
    ) -> None:
        self.config = config
        self.device_id = device_id
        """Sent with every resolution: during a staged rollout only a device in the cohort
        gets the new version (`wastesort.registry.rollout`); None resolves the stable one."""
        self.dir = Path(state_dir) / "models"  # made by the first install (a full disk...)
        self.cache_dir = Path(state_dir) / "cache"
        self._registry = registry
        self._clock = clock
        self._lock = threading.RLock()  # the poller and the frame loop both change state
        self._pending: Classifier | None = None
        self.current: Installed | None = None
        self.previous: Installed | None = None
        self.rejected: dict[str, dict[str, Any]] = {}
        self.last_check_at: float | None = None
        self.last_error: str | None = None
        self.on_error: Callable[[str], None] | None = None
        """Also told every error (the runner: the heartbeat's `last_error`)."""
        self.references = DeviceReferences(self.dir, self._fetch, self._note)
        self._read_state()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.from_uri(
                self.config.registry or default_model_uri(), cache_dir=self.cache_dir
            )
        return self._registry

    # --- state on disk -----------------------------------------------------------------------

    def _read_state(self) -> None:
        path = self.dir / STATE_FILE
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            self.current = Installed.from_json(data["current"]) if data.get("current") else None
            self.previous = Installed.from_json(data["previous"]) if data.get("previous") else None
            self.rejected = dict(data.get("rejected") or {})
        except (ValueError, KeyError, TypeError) as exc:
            # state.json is written atomically, so this is tampering or disk damage.
            log.error("ignoring unreadable %s (%s); reinstalling from the registry", path, exc)
            self.current = self.previous = None

    def _write_state(self) -> None:
        with self._lock:
            self._write_state_locked()

    def _write_state_locked(self) -> None:
        data = {
            "current": self.current.to_json() if self.current else None,
            "previous": self.previous.to_json() if self.previous else None,
            "rejected": self.rejected,
        }
        write_atomic(self.dir / STATE_FILE, (json.dumps(data, indent=2) + "\n").encode())
        keep = {STATE_FILE}.union(*(m.files for m in (self.current, self.previous) if m))
        for path in self.dir.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def _clean_stale_downloads(self) -> None:
        """Temp files a power cut or kill left behind, never valid models: interrupted
        downloads in the cache, interrupted model (or state.json) writes in `models/`."""
        remove_stale_temps(self.cache_dir, (".download-*",))
        remove_stale_temps(self.dir)

    # --- loading -----------------------------------------------------------------------------

    def _classifier(self, content: bytes, choice: Choice, ref: Reference | None) -> Classifier:
        return self.references.classifier(content, choice, ref, self.config.num_threads)

    def _load_installed(self, installed: Installed) -> Classifier:
        choice = Choice(installed.entry, installed.variant)
        if choice.variant and artifacts.variant_for(choice.entry, choice.variant) is None:
            # The hardware is missing, not the model: the same version serves on the CPU and
            # stays installed (and not rejected), so it runs on the Coral again once it is back.
            choice = Choice(installed.entry, None)
        path = self.dir / file_name(choice.ref, choice.variant)
        if path.name == installed.file or path.exists():
            content = path.read_bytes()
        else:  # an Edge TPU install from before the CPU build was kept beside it
            content = self._fetch(choice.ref)
        artifacts.verify_content(content, choice, public_key=self.config.public_key)
        reference, fetched = self.references.load(installed.entry)
        self.references.keep(fetched)  # an install from before references were kept
        return self._classifier(content, choice, reference)

    def start(self) -> Classifier:
        """The model to serve at boot: the installed one, else the last known good, else a
        fresh install from the registry.

        Raises:
            ModelError, RegistryError: nothing installed and the registry cannot provide one.
        """
        self._clean_stale_downloads()
        failure: Exception | None = None
        for which in ("current", "previous"):
            installed: Installed | None = getattr(self, which)
            if installed is None:
                continue
            try:
                classifier = self._load_installed(installed)
            except (OSError, WastesortError) as exc:
                self._note(f"installed model {installed.entry.version} unusable: {exc}")
                failure = exc
                continue
            if which == "previous":
                if not isinstance(failure, RegistryError):  # offline says nothing of the model
                    self._reject(self.current, "did not load at start", code="model_failing")
                self.current, self.previous = installed, None
                self._write_state()
            log.info("serving model %s (%s)", classifier.version, describe(classifier))
            return classifier
        entry = self.registry.resolve(self.config.alias, self.device_id)
        classifier, installed, files = self._prepare(entry)
        self._install(installed, files)
        log.info("installed model %s (%s)", classifier.version, describe(classifier))
        return classifier

    def _prepare(self, entry: ModelEntry) -> Prepared:
        """Download, verify, load and self-test `entry`; nothing on disk changes yet."""
        choice = artifacts.choose(
            entry, delegate=self.config.delegate, public_key=self.config.public_key
        )
        installed = Installed(entry, file_name(choice.ref, choice.variant), choice.variant)
        files = {installed.file: self._fetch(choice.ref)}
        reference, fetched = self.references.load(entry)
        files.update(fetched)  # installed with the model, as the model is
        classifier = self._classifier(files[installed.file], choice, reference)
        if self.config.self_test:
            self.self_test(classifier)
        if choice.variant == EDGETPU:  # for a boot without the Coral: see _load_installed
            files[installed.cpu_file] = self._fetch(entry.artifact)
        return classifier, installed, files

    def _fetch(self, ref: ArtifactRef) -> bytes:
        fetched, content = self.registry.fetch_content(ref)
        if fetched.is_relative_to(self.cache_dir):
            fetched.unlink(missing_ok=True)  # its copy in models/ is the one kept
        return content

    def self_test(self, classifier: Classifier) -> None:
        """Replay the golden set published with the version (`wastesort.golden`'s rule).

        Raises:
            SelfTestError: a golden image gets another class, or scores off by more than
                `golden_tolerance`.
        """
        entry = classifier.entry
        if not entry.golden_set:
            log.warning("model %s has no golden set; only a blank frame is tried", entry.version)
            classifier.warm_up()
            return
        images = ((item, self.registry.fetch_content(item.image)[1]) for item in entry.golden_set)
        failures = golden.check(
            classifier.predict, entry, images, tolerance=self.config.golden_tolerance
        )
        if failures:
            raise SelfTestError(
                f"model {entry.version} failed its golden set: golden image " + "; ".join(failures)
            )

    def _install(self, installed: Installed, files: dict[str, bytes]) -> None:
        """Model files first, then state.json: a crash between leaves unused files."""
        with self._lock:
            for name, content in files.items():
                if not (self.dir / name).exists():
                    write_atomic(self.dir / name, content)
            if self.current is not None and self.current.entry.version != installed.entry.version:
                self.previous = self.current
            self.current = installed
            self.rejected.pop(installed.entry.version, None)
            self._write_state()

    def _reject(self, installed: Installed | None, reason: str, *, code: str) -> None:
        if installed is None:
            return
        self._reject_version(installed.entry.version, reason, final=True, code=code)

    def _reject_version(self, version: str, reason: str, *, final: bool, code: str) -> None:
        record = self.rejected.setdefault(version, {"attempts": 0})
        record["attempts"] += 1
        record["reason"] = reason
        record["code"] = code
        record["final"] = final or record["attempts"] >= MAX_ATTEMPTS
        record["at"] = self._clock()
        self._write_state()

    def _note(self, message: str) -> None:
        self.last_error = message
        log.error("%s", message)
        if self.on_error is not None:
            self.on_error(message)

    # --- updating ----------------------------------------------------------------------------

    def check(self) -> Classifier | None:
        """Poll the registry once; a verified, self-tested new model becomes pending.

        Returns:
            the new classifier (also kept for `take_pending`), or None.
        """
        self.last_check_at = self._clock()
        try:
            entry = self.registry.resolve(self.config.alias, self.device_id)
        except WastesortError as exc:
            self._note(f"cannot read the registry: {exc}")
            return None
        current = self.current.entry if self.current else None
        if current is not None and (entry.version, entry.sha256) == (
            current.version,
            current.sha256,
        ):
            return self._retry_reference()
        if self.rejected.get(entry.version, {}).get("final"):
            log.debug("alias %s -> %s, rejected earlier", self.config.alias, entry.version)
            return None
        log.info(
            "alias %s moved to %s (serving %s); updating",
            self.config.alias,
            entry.version,
            current.version if current else "nothing",
        )
        prepared = self._try_prepare(entry)
        if prepared is None:
            return None
        classifier, installed, files = prepared
        self._install(installed, files)
        with self._lock:
            self._pending = classifier
        log.info("model %s verified and self-tested; switching", entry.version)
        return classifier

    def _retry_reference(self) -> Classifier | None:
        """The serving version lacks its reference file: fetch it again, a few polls."""
        installed = self.current
        if installed is None or not self.references.retry_due(installed.entry):
            return None
        try:
            classifier = self._load_installed(installed)
        except (OSError, WastesortError) as exc:
            self._note(f"installed model {installed.entry.version} unusable: {exc}")
            return None
        if classifier.reference is None:
            return None
        with self._lock:
            self._pending = classifier
        return classifier

    def _try_prepare(self, entry: ModelEntry) -> Prepared | None:
        try:
            return self._prepare(entry)
        except (SignatureError, SelfTestError) as exc:
            self._note(f"refused model {entry.version}: {exc}")
            self._reject_version(entry.version, str(exc), final=True, code=exc.code)
        except ModelError as exc:  # integrity: maybe a bad download, retried a few times
            self._note(f"refused model {entry.version}: {exc}")
            self._reject_version(entry.version, str(exc), final=False, code=exc.code)
        except WastesortError as exc:  # the registry is unreachable: try again next poll
            self._note(f"cannot update to {entry.version}: {exc}")
        return None

    def take_pending(self) -> Classifier | None:
        """The classifier to switch to before the next frame, once."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def rollback(self, reason: str) -> Classifier | None:
        """Go back to the last known good model (the current one failed at run time).

        With a verified update still pending (installed, not yet swapped in), the model that
        failed is the one running, not the update: switch forward to the update instead.
        """
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._note(f"model failing ({reason}); switching to the verified {pending.version}")
            return pending
        if self.previous is None:
            self._note(f"model failing ({reason}) and no earlier model to roll back to")
            return None
        bad, good = self.current, self.previous
        try:
            classifier = self._load_installed(good)
        except (OSError, WastesortError) as exc:
            self._note(f"rollback to {good.entry.version} failed: {exc}")
            return None
        with self._lock:
            self.current, self.previous = good, None
            self._pending = None
        self._reject(bad, reason, code="model_failing")
        self._note(
            f"rolled back from {bad.entry.version if bad else '?'} to {good.entry.version}: "
            f"{reason}"
        )
        return classifier

    def next_delay(self, rng: Callable[[float, float], float] = random.uniform) -> float:
        """The poll interval with jitter, so a fleet spreads its requests."""
        jitter = self.config.poll_jitter
        return self.config.poll_interval_s * (1 + rng(-jitter, jitter))

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.next_delay()):
            try:
                self.check()
            except Exception as exc:  # the poller must outlive any surprise
                self._note(f"update check crashed: {type(exc).__name__}: {exc}")

    def status(self) -> dict[str, Any]:
        """The heartbeat's `model`: `rejected` lists the versions refused for good (as it
        always did); `refusals` says why, for the latest few refused or still retried."""
        return {
            "version": self.current.entry.version if self.current else None,
            "sha256": self.current.entry.sha256 if self.current else None,
            "last_known_good": self.previous.entry.version if self.previous else None,
            "alias": self.config.alias,
            "last_check_at": self.last_check_at,
            "last_error": self.last_error,
            "rejected": sorted(v for v, r in self.rejected.items() if r.get("final")),
            "refusals": self.refusals(),
            **self.references.status(self.current.entry if self.current else None),
        }

    def refusals(self, latest: int = REFUSALS_REPORTED) -> dict[str, dict[str, Any]]:
        """Why each of the `latest` refused versions was refused, newest first:
        `{version: {reason, code, attempts, final, at}}` (`at`, `code`: None for a refusal
        recorded before refusals had them; `code` is the error's, e.g. `self_test_failed`)."""
        with self._lock:
            return latest_refusals(self.rejected, latest)


def describe(classifier: Classifier) -> str:
    info = classifier.runtime
    where = "Edge TPU" if info.delegate == EDGETPU else f"CPU x{info.num_threads}"
    return f"{info.name} {info.version} on {where}"
