"""What a drift watch run produced: metric rows (one EMF line each) and the summary it logs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from wastesort import drift

COUNT, NONE = "Count", "None"
MAX_LISTED = 50


@dataclass
class Emission:
    """One EMF line: metrics (name, unit, value) under one dimension set (besides `service`)."""

    dimensions: dict[str, str]
    metrics: list[tuple[str, str, float]]


@dataclass
class Outcome:
    """What a run judged, for the log line and the metrics."""

    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    fleet: dict[str, Any] | None = None
    errors: int = 0
    emissions: list[Emission] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """One log line's worth: every version, the devices that are not `ok` and the stale
        and behind ones (at most `MAX_LISTED` of each: a log event holds 256 KB)."""
        fleet = self.fleet or {}
        unwell = {d: r for d, r in sorted(self.devices.items()) if r["verdict"] != drift.OK}
        return {
            "versions": self.versions,
            "device_verdicts": dict(Counter(r["verdict"] for r in self.devices.values())),
            "devices": dict(list(unwell.items())[:MAX_LISTED]),
            "errors": self.errors,
            "fleet": {
                "versions": fleet.get("versions", {}),
                **{k: fleet[k][:MAX_LISTED] for k in ("stale", "behind") if k in fleet},
            },
        }
