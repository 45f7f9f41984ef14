"""Offline-first telemetry: every decision goes to a local SQLite queue, batches go up when
the network is there.

- `queue`: the bounded, crash-safe queue (claim -> put -> complete; nothing lost or doubled),
  of events and of captures (`edge.capture`).
- `sinks`: where batches and heartbeats go (S3, HTTPS), chosen by `telemetry.upload_to`, and
  captures, by `capture.upload_to`.
- `uploader`: drains the queue into a sink with backoff and jitter.
- `wiring`: the `telemetry:` config section -> the three above, as the runner takes them.
"""

from edge.telemetry.queue import TelemetryQueue, utc_iso
from edge.telemetry.sinks import (
    CAPTURE_PREFIX,
    DEVICE_PREFIX,
    CaptureSink,
    HttpSink,
    S3Sink,
    Sink,
    open_capture_sink,
    open_sink,
)
from edge.telemetry.uploader import Uploader, backoff_delay
from edge.telemetry.wiring import Telemetry, open_telemetry, telemetry_status

__all__ = [
    "CAPTURE_PREFIX",
    "DEVICE_PREFIX",
    "CaptureSink",
    "HttpSink",
    "S3Sink",
    "Sink",
    "Telemetry",
    "TelemetryQueue",
    "Uploader",
    "backoff_delay",
    "open_capture_sink",
    "open_sink",
    "open_telemetry",
    "telemetry_status",
    "utc_iso",
]
