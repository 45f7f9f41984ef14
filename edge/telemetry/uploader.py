"""The uploader: drains the queue into a sink on its own thread, backing off while the
network is away."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.telemetry.queue import TelemetryQueue, utc_iso
from edge.telemetry.sinks import CaptureSink, Sink

if TYPE_CHECKING:
    from edge.telemetry.records import RecordQueue, RecordSink

log = logging.getLogger(__name__)


def backoff_delay(
    failures: int, *, base: float, cap: float, rng: Callable[[float, float], float] | None = None
) -> float:
    """Exponential backoff with jitter: half the step fixed, half random ("equal jitter"),
    so a fleet that lost the network together does not come back in lockstep."""
    step = min(cap, base * 2 ** max(0, failures - 1))
    uniform = rng or random.uniform
    return step / 2 + uniform(0, step / 2)


class Uploader:
    """Drains the queue into a sink (events), a capture sink (captures) and a record sink
    (prediction records, `edge.telemetry.records`), backing off while any is unreachable."""

    def __init__(
        self,
        queue: TelemetryQueue,
        sink: Sink | None,
        *,
        capture_sink: CaptureSink | None = None,
        records: RecordQueue | None = None,
        record_sink: RecordSink | None = None,
        batch_size: int = 500,
        interval_s: float = 60.0,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 900.0,
    ) -> None:
        self.queue = queue
        self.sink = sink
        self.capture_sink = capture_sink
        self.records = records
        self.record_sink = record_sink if records is not None else None
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.failures = 0
        self.last_error: str | None = None
        self.last_upload_at: str | None = None

    def flush(self, deadline: float | None = None) -> int:
        """Upload until the queue is empty (or `deadline`, a monotonic time, passes).

        Returns:
            events uploaded. Raises whatever the sink raised, after nothing was lost.
        """
        sent = 0
        while self.sink is not None and (deadline is None or time.monotonic() < deadline):
            claimed = self.queue.claim(self.batch_size)
            if claimed is None:
                break
            batch, key, body = claimed
            self.sink.put(key, body)
            sent += self.queue.complete(batch)
            self.last_upload_at = utc_iso()
        while self.capture_sink is not None and (deadline is None or time.monotonic() < deadline):
            taken = self.queue.claim_capture()
            if taken is None:
                break
            row, capture = taken
            self.capture_sink.put_capture(capture.key, capture.jpeg, capture.record)
            sent += self.queue.complete_capture(row)
            self.last_upload_at = utc_iso()
        while self.record_sink is not None and (deadline is None or time.monotonic() < deadline):
            assert self.records is not None
            claimed = self.records.claim(self.batch_size)
            if claimed is None:
                break
            batch, key, body = claimed
            self.record_sink.put(key, body)
            sent += self.records.complete(batch)
            self.last_upload_at = utc_iso()
        return sent

    def attempt(self) -> float:
        """One upload round; returns how long to wait before the next."""
        try:
            sent = self.flush()
        except Exception as exc:  # any network/SDK failure: back off, keep the events
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            delay = backoff_delay(self.failures, base=self.backoff_base_s, cap=self.backoff_max_s)
            log.warning(
                "telemetry upload failed (%d in a row), retrying in %.0fs: %s",
                self.failures,
                delay,
                self.last_error,
            )
            return delay
        if sent:
            log.info("uploaded %d telemetry events and captures", sent)
        self.failures = 0
        return self.interval_s

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.attempt()
            stop.wait(delay)
