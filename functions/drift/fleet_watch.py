"""The fleet half of the drift watch: heartbeats -> devices, stale, behind, per-version counts.

It runs before the records are read, so the stale count is published however long they take.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from functions.api import metric_names as m
from functions.drift.results import COUNT, Emission, Outcome
from wastesort.fleet import FleetError, read_heartbeats, summarize
from wastesort.registry.store import RegistryStore

log = logging.getLogger(__name__)


def watch_fleet(
    telemetry: RegistryStore,
    expected: str | None,
    now: datetime,
    out: Outcome,
    *,
    stale_minutes: float,
    expect_for: Callable[[str], str | None] | None = None,
) -> None:
    """Heartbeats -> the fleet summary (`out.fleet`) and its counts: devices, stale, behind."""
    try:
        beats = read_heartbeats(telemetry)
    except FleetError:
        log.exception("cannot read the fleet's heartbeats")
        out.errors += 1
        return
    fleet = summarize(
        beats,
        now=now.timestamp(),
        stale_minutes=stale_minutes,
        expect=expected,
        expect_for=expect_for,
    )
    out.fleet = fleet
    out.emissions.append(
        Emission(
            {},
            [
                (m.METRIC_DEVICES, COUNT, float(len(fleet["devices"]))),
                (m.METRIC_STALE_DEVICES, COUNT, float(len(fleet["stale"]))),
                (m.METRIC_DEVICES_BEHIND, COUNT, float(len(fleet["behind"]))),
            ],
        )
    )
    for version, count in fleet["versions"].items():
        out.emissions.append(
            Emission(
                {m.DIM_MODEL_VERSION: version}, [(m.METRIC_DEVICES_BY_VERSION, COUNT, float(count))]
            )
        )
