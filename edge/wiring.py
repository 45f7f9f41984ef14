"""From a config to a running `Runner`: the source, the model updater, the telemetry queue and
sinks, capture, the actuators (tests pass a mock pin factory, a registry or sinks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.actuators import build_actuators
from edge.capture import EdgeCapture
from edge.config import EdgeConfig
from edge.decided import open_decided
from edge.records import EdgeRecords
from edge.runner import Runner
from edge.sources import open_source
from edge.telemetry import open_telemetry
from edge.updater import Updater


def build_runner(
    config: EdgeConfig,
    *,
    once: bool = False,
    pin_factory: Any = None,
    console: bool | None = None,
    updater: Updater | None = None,
    sink: Any = None,
    capture_sink: Any = None,
    record_sink: Any = None,
) -> Runner:
    """Wire a runner from config (tests pass a mock pin factory, a registry or a sink)."""
    state = Path(config.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    updater = updater or Updater(config.model, state, device_id=config.device_id)
    folder = config.source.kind == "folder"
    decided = open_decided(state, durability=config.telemetry.durability) if folder else None
    source = open_source(
        config.source,
        once=once,
        burst=config.decide.frames,
        pin_factory=pin_factory,
        decided=decided,
    )
    telemetry = open_telemetry(
        config.telemetry,
        state,
        device_id=config.device_id,
        sink=sink,
        capture=config.capture,
        capture_sink=capture_sink,
        records=config.records,
        record_sink=record_sink,
    )
    on = config.capture.enabled and telemetry.queue is not None
    capture = EdgeCapture(config.capture, device_id=config.device_id) if on else None
    actuators = build_actuators(
        config.actuators, device_id=config.device_id, pin_factory=pin_factory, console=console
    )
    return Runner(
        config,
        source=source,
        updater=updater,
        actuators=actuators,
        queue=telemetry.queue,
        uploader=telemetry.uploader,
        once=once,
        per_file=config.source.kind != "camera",
        telemetry_error=telemetry.error,
        sink=telemetry.sink,
        decided=decided,
        capture=capture,
        records=EdgeRecords(config.records, device_id=config.device_id, queue=telemetry.records),
    )
