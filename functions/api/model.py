"""The served model's lifecycle: load once (at init on Lambda, at startup under uvicorn),
report why when it cannot, and try again now and then instead of crash-looping.

Why a load failed is told twice: in full in the log (with credentials in any URL redacted),
and to callers as what failed, without where: `MODEL_URI` names buckets, hosts and paths, and a
URL in it may carry a password (`https://user:secret@host/...`).
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from typing import Any

from functions.api.observability import logger, subsegment
from functions.api.problems import Problem
from functions.api.settings import Settings
from wastesort import Classifier
from wastesort.classifier import split_ref
from wastesort.errors import WastesortError

_USERINFO = re.compile(r"(?<=://)[^/\s]*@")

LOAD_FAILURES = {  # the core's error code -> what failed, in words that name no location
    "not_found": "the model file or its registry was not found",
    "registry_error": "the model registry could not be read",
    "manifest_invalid": "the registry's manifest is not valid",
    "unsupported_schema": "the registry's manifest has a schema version this server cannot read",
    "unknown_version": "the registry has no such version or alias",
    "integrity_error": "the model file does not match its expected sha256",
    "bad_signature": "the model's signature does not verify",
    "no_runtime": "no TFLite runtime is installed",
    "bad_setting": "a runtime setting is not valid",
    "warmup_failed": "the model loaded but failed its first run",
}


def redact(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by `***`."""
    return _USERINFO.sub("***@", text)


def load_failure(code: str) -> str:
    """What callers are told when the model did not load: what failed, never where."""
    what = LOAD_FAILURES.get(code, "the model could not be loaded")
    return f"the model is not loaded: {what} (the server log has the details)"


class ModelState:
    """Holds the classifier, or the reason there is none.

    Args:
        settings: where the model is (`model_uri`, `model_sha256`) and how to run it.
        classifier: an already loaded classifier (tests, benchmarks); skips loading.
    """

    def __init__(self, settings: Settings, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self.classifier = classifier
        self.error: str | None = None
        """Why the last load failed, in full but redacted: for the log only."""
        self.error_code: str | None = None
        self.load_ms: float | None = None
        self.warmup_ms: float | None = None
        self.started = time.monotonic()
        self._attempted: float | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.classifier is not None

    @property
    def version(self) -> str:
        """The served version, else the ref MODEL_URI names (so metrics of a version that
        fails to load land on its own dimension), else `unknown`."""
        if self.classifier is not None:
            return self.classifier.version
        return split_ref(self.settings.model_uri)[1] or "unknown"

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def load(self) -> bool:
        """Load the model; on failure remember why (never raises). Returns whether loaded."""
        with self._lock:
            if self.classifier is not None:
                return True
            self._attempted = time.monotonic()
            start = time.perf_counter()
            try:
                with subsegment("load_model"):
                    self.classifier = Classifier.load(
                        self.settings.model_uri,
                        expected_sha256=self.settings.model_sha256 or None,
                        num_threads=self.settings.num_threads,
                        pool_size=self.settings.pool_size,
                        max_pixels=self.settings.max_pixels,
                    )
            except WastesortError as exc:
                self.error, self.error_code = redact(exc.message), exc.code
            except Exception as exc:  # a broken registry must not crash-loop the function
                self.error = redact(f"{type(exc).__name__}: {exc}")
                self.error_code = "load_failed"
                logger.error(
                    "model load failed unexpectedly",
                    extra={"traceback": redact("".join(traceback.format_exception(exc)))},
                )
            self.load_ms = round((time.perf_counter() - start) * 1000, 1)
            if self.classifier is None:
                logger.error(
                    "model not loaded",
                    extra={
                        "model_uri": redact(self.settings.model_uri),
                        "reason": self.error,
                        "code": self.error_code,
                        "load_ms": self.load_ms,
                    },
                )
                return False
            try:
                self._warm_up()
            except Exception as exc:  # a model that loads but cannot run is not served
                self.classifier = None
                self.error, self.error_code = redact(f"warm-up failed: {exc}"), "warmup_failed"
                logger.error(
                    "model warm-up failed",
                    extra={"traceback": redact("".join(traceback.format_exception(exc)))},
                )
                return False
            self.error = self.error_code = None
            logger.info(
                "model loaded",
                extra={
                    "model_version": self.classifier.version,
                    "sha256": self.classifier.entry.sha256,
                    "runtime": self.classifier.runtime.to_dict(),
                    "load_ms": self.load_ms,
                    "warmup_ms": self.warmup_ms,
                },
            )
            return True

    def _warm_up(self) -> None:
        """One invoke on a blank image, so the first request does not pay for the runtime's
        lazy setup (XNNPACK packs the weights on the first invoke). Part of init on Lambda,
        and captured in the snapshot with SnapStart."""
        assert self.classifier is not None
        self.warmup_ms = self.classifier.warm_up()

    def retry_due(self) -> bool:
        if self.classifier is not None or self._attempted is None:
            return self.classifier is None
        return time.monotonic() - self._attempted >= self.settings.model_retry_s

    def require(self) -> Classifier:
        """The classifier, or a 503 problem saying what failed (not where: see the module)."""
        if self.classifier is None:
            if self.error_code is None:
                raise Problem("model-unavailable", "the model is still loading", code="loading")
            raise Problem("model-unavailable", load_failure(self.error_code), code=self.error_code)
        return self.classifier

    def health(self) -> dict[str, Any]:
        clf = self.require()
        return {
            "status": "ok",
            "model_version": clf.version,
            "sha256": clf.entry.sha256,
            "runtime": clf.runtime.to_dict(),
            "uptime_s": self.uptime_s(),
            "load_ms": self.load_ms,
        }
