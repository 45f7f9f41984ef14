"""From the `telemetry:` section to a queue, a sink and an uploader, as the runner needs them."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.telemetry.queue import TelemetryQueue
from edge.telemetry.records import RecordQueue, RecordSink, open_record_sink
from edge.telemetry.sinks import CaptureSink, Sink, open_capture_sink, open_sink
from edge.telemetry.uploader import Uploader

if TYPE_CHECKING:
    from edge.config import CaptureConfig, RecordsConfig, TelemetryConfig

log = logging.getLogger(__name__)

QUEUE_FILE = "telemetry.sqlite"


@dataclass
class Telemetry:
    """What the runner gets; with telemetry disabled, every part is None."""

    queue: TelemetryQueue | None = None
    uploader: Uploader | None = None
    """Only with both a queue and a sink."""
    sink: Sink | None = None
    """Also takes heartbeats, with or without a queue."""
    error: str | None = None
    """Why the queue could not be opened (then decisions are made, not recorded)."""
    capture_sink: CaptureSink | None = None
    """Where captures go (`capture.upload_to`), when capture is on."""
    records: RecordQueue | None = None
    """Prediction records waiting for upload (in the same file), when records are on."""
    record_sink: RecordSink | None = None
    """Where records go (`records.upload_to`, else `capture.upload_to`)."""


def open_telemetry(
    config: TelemetryConfig,
    state_dir: Path,
    *,
    device_id: str,
    sink: Sink | None = None,
    capture: CaptureConfig | None = None,
    capture_sink: CaptureSink | None = None,
    records: RecordsConfig | None = None,
    record_sink: RecordSink | None = None,
) -> Telemetry:
    """Open the queue in `state_dir` and the configured sinks (or those tests pass).

    A queue that cannot be opened (a full disk, a broken file) is reported in `error`, never
    raised: it must not stop the sorting.
    """
    if not config.enabled:
        return Telemetry()
    queue = uploader = error = None
    try:
        queue = TelemetryQueue(
            state_dir / QUEUE_FILE,
            device_id=device_id,
            max_events=config.max_events,
            durability=config.durability,
            max_captures=capture.max_captures if capture and capture.enabled else None,
        )
    except (sqlite3.Error, OSError) as exc:
        error = (
            f"telemetry storage unavailable, decisions are not recorded until a restart: "
            f"{type(exc).__name__}: {exc}"
        )
    sink = sink or open_sink(config.upload_to)
    if capture is not None and capture.enabled:
        capture_sink = capture_sink or open_capture_sink(capture.upload_to)
    else:
        capture_sink = None
    record_queue = None
    if queue is not None and records is not None and records.enabled and records.sample > 0:
        try:
            record_queue = RecordQueue(
                state_dir / QUEUE_FILE,
                device_id=device_id,
                max_pending=records.max_pending,
                keep=records.keep,
            )
        except (sqlite3.Error, OSError) as exc:  # decisions are still recorded: only logged
            log.error("prediction records unavailable: %s: %s", type(exc).__name__, exc)
        uri = records.upload_to or (capture.upload_to if capture is not None else None)
        record_sink = record_sink or open_record_sink(uri)
    else:
        record_sink = None
    if queue is not None and (sink or capture_sink or (record_queue and record_sink)):
        uploader = Uploader(
            queue,
            sink,
            capture_sink=capture_sink,
            records=record_queue,
            record_sink=record_sink,
            batch_size=config.batch_size,
            interval_s=config.upload_interval_s,
            backoff_base_s=config.backoff_base_s,
            backoff_max_s=config.backoff_max_s,
        )
    return Telemetry(
        queue=queue,
        uploader=uploader,
        sink=sink,
        error=error,
        capture_sink=capture_sink,
        records=record_queue,
        record_sink=record_sink,
    )


def telemetry_status(
    queue: TelemetryQueue | None, uploader: Uploader | None, error: str | None, not_recorded: int
) -> dict[str, Any]:
    """The heartbeat's `telemetry`: the queue's counters and the uploader's state, or why
    there is no queue and how many decisions went unrecorded."""
    if queue is None:
        return {"error": error, "not_recorded": not_recorded}
    status = queue.stats()
    if uploader is not None:
        status["upload_failures"] = uploader.failures
        status["last_upload_at"] = uploader.last_upload_at
        status["last_upload_error"] = uploader.last_error
    return status
