"""Prediction records behind the API: a fair sample for drift reports, never at an answer's cost.

A uniformly sampled share (`API_RECORD_SAMPLE`) of predictions, single and batch, becomes a
record (`wastesort.records.make_record`: all confidences, projected embedding, image statistics;
no image, no address) in a bounded in-memory batch (`RecordBatcher`). Adding never blocks and
never writes; when the batch is full (`API_RECORD_BATCH`) or old (`API_RECORD_MAX_AGE_S`) the
request that notices it schedules one write as a background task. Under uvicorn that runs after
the answer has gone; on Lambda Mangum runs it before returning, so it happens at most once per
batch and goes through the capture store's bounded S3 client (short timeouts, one attempt,
`API_CAPTURE_TIMEOUT_S`). A full buffer sheds and counts (`RecordsDropped`), a failed write is
logged and counted (`RecordFailures`) and retried a period later; neither is ever a 5xx.
Records still waiting when a Lambda sandbox is retired are lost with it (at most one batch or
`API_RECORD_MAX_AGE_S` of a sample; uvicorn writes them at shutdown).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from functions.api import observability as obs
from functions.api.metric_names import METRIC_RECORD_FAILURES, METRIC_RECORDS_DROPPED
from wastesort.capture import API_SOURCE, CaptureStore
from wastesort.records import RecordBatcher, make_record
from wastesort.registry.store import RegistryStore

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.background import BackgroundTasks

    from functions.api.settings import Settings


def answered(prediction: Any, top_k: int | None) -> Any:
    """The prediction as the answer gives it: `all_confidences` cut to the `top_k` best (they
    are ranked, highest first). The API predicts every class and cuts here, so that a record
    made from the uncut prediction holds every confidence whatever the request asked for."""
    if top_k is None or len(prediction.all_confidences) <= top_k:
        return prediction
    best = dict(list(prediction.all_confidences.items())[: max(top_k, 1)])
    return dataclasses.replace(prediction, all_confidences=best)


class Recorder:
    """The API's record switch, sampler and batch.

    Args:
        settings: `record_uri` (None: `capture_uri`; neither: off), `record_sample` (0: off),
            `record_batch`, `record_max_age_s`, `record_max_pending`, `capture_timeout_s`.
        store: write to this store instead of opening the URI (tests).
        rng: the sampler's random source (tests pass a seeded one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: RegistryStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.uri = settings.record_uri or settings.capture_uri or (store.uri if store else None)
        self.share = settings.record_sample
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self.batcher: RecordBatcher | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._dropped = 0
        if self.uri is None or self.share <= 0:
            return
        try:  # nothing is reached: a bad URI turns recording off, loudly
            if store is None:
                # on S3 the store's bounded client is built at the first write, so recording
                # adds no S3 client to a cold start
                store = CaptureStore.from_uri(self.uri, timeout_s=settings.capture_timeout_s).store
            self.batcher = RecordBatcher(
                store,
                API_SOURCE,
                max_records=settings.record_batch,
                max_age_s=settings.record_max_age_s,
                max_pending=max(settings.record_max_pending, settings.record_batch),
            )
        except Exception as exc:  # the API serves without records rather than not at all
            obs.logger.error(
                "prediction records are off", extra={"uri": self.uri, "error": str(exc)}
            )

    @property
    def enabled(self) -> bool:
        return self.batcher is not None

    def schedule(self, background: BackgroundTasks, predictions: Iterable[Any]) -> int:
        """Sample these predictions into the batch; queue a write when the batch is due.

        Returns:
            how many were recorded (0 when off).
        """
        batcher = self.batcher
        if batcher is None:
            return 0
        now = datetime.now(UTC)
        kept = 0
        version = ""
        for prediction in predictions:
            version = prediction.model_version
            if self.rng.random() >= self.share:
                continue
            kept += batcher.add(make_record(prediction, source=API_SOURCE, at=now))
        self._report(version)
        if batcher.due():
            background.add_task(self.flush, version)
        return kept

    def flush(self, version: str = "") -> int:
        """Write what waits; never raises (a failure is logged and counted by the batcher)."""
        if self.batcher is None:
            return 0
        try:
            written = self.batcher.flush()
        except Exception as exc:  # whatever broke, the answers have been given
            obs.logger.warning("prediction records not written", extra={"error": str(exc)})
            written = 0
        self._report(version)
        return written

    def _report(self, version: str) -> None:
        """Emit the batcher's new failures and drops since the last report, once each."""
        batcher = self.batcher
        if batcher is None:
            return
        with self._lock:
            failures, self._failures = batcher.failures - self._failures, batcher.failures
            dropped, self._dropped = batcher.dropped - self._dropped, batcher.dropped
        if failures:
            obs.record_count(METRIC_RECORD_FAILURES, version or "unknown", failures)
        if dropped:
            obs.record_count(METRIC_RECORDS_DROPPED, version or "unknown", dropped)
