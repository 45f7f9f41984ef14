"""Capture behind the API: keep the photos worth learning from, never at a prediction's expense.

The decision (`wastesort.capture.Sampler`: every `uncertain`, a sampled fraction of the rest)
is made while answering, so the answer can carry the capture id; the write runs as a Starlette
background task. Under uvicorn that is after the response has gone; on Lambda Mangum runs it
before it returns, so the caller waits for it: the S3 client is bounded (short timeouts, one
attempt, `API_CAPTURE_TIMEOUT_S`). A failed write is logged and counted (`CaptureFailures`),
never raised: capture cannot turn a prediction into a 5xx.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from functions.api import observability as obs
from wastesort.capture import API_SOURCE, CaptureStore, Sampler, new_id

if TYPE_CHECKING:
    import random

    from starlette.background import BackgroundTasks

    from functions.api.settings import Settings


class Capturer:
    """The API's capture switch, sampler and store (built lazily: a store that cannot be
    reached must not stop the app from starting).

    Args:
        settings: `capture_uri` (None: off), `capture_sample`, `capture_timeout_s`.
        store: use this store instead of opening `capture_uri` (tests).
        rng: the sampler's random source (tests pass a seeded one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: CaptureStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.uri = settings.capture_uri or (store.uri if store else None)
        self.enabled = self.uri is not None
        fraction = settings.capture_sample
        self.sampler = Sampler(fraction, rng) if rng else Sampler(fraction)
        self._timeout_s = settings.capture_timeout_s
        self._store = store
        self._lock = threading.Lock()

    @property
    def store(self) -> CaptureStore:
        """The store, opened on first use (boto3 clients are not built safely in parallel).

        Raises:
            RegistryError: capture is off, or the URI names no store this API can write.
        """
        with self._lock:
            if self._store is None:
                if self.uri is None:
                    from wastesort.capture import CaptureError  # noqa: PLC0415

                    raise CaptureError("capture is off (API_CAPTURE_URI is not set)")
                self._store = CaptureStore.from_uri(self.uri, timeout_s=self._timeout_s)
            return self._store

    def schedule(self, background: BackgroundTasks, image: bytes, prediction: Any) -> str | None:
        """Decide whether to keep this photo; if so, queue its write and return its id."""
        if not self.enabled:
            return None
        reason = self.sampler.reason(prediction.decision)
        if reason is None:
            return None
        capture_id = new_id(API_SOURCE)
        background.add_task(self.write, capture_id, reason, image, prediction)
        return capture_id

    def write(self, capture_id: str, reason: str, image: bytes, prediction: Any) -> bool:
        """Store one capture; any failure is logged and counted, never raised."""
        try:
            self.store.save(image, prediction, reason=reason, capture_id=capture_id)
        except Exception as exc:  # whatever broke, the answer has been given
            obs.logger.warning(
                "capture failed",
                extra={
                    "capture_id": capture_id,
                    "model_version": prediction.model_version,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            obs.record_capture_failure(prediction.model_version)
            return False
        return True
