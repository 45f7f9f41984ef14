"""The heartbeat: what a fleet operator needs to know about one bin, small enough to send
every minute. Written to `<state>/health.json` (for `edge status` and local checks) and, when
telemetry has a sink, uploaded as the device's latest heartbeat."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.installed import remove_stale_temps
from wastesort.registry import write_atomic

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temperature(path: Path = THERMAL_ZONE) -> float | None:
    """The SoC temperature in °C where the kernel exposes it (a Pi does), else None."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def peak_rss_mb() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(usage / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class Health:
    """Collects the heartbeat from the parts that know each fact."""

    def __init__(self, device_id: str, state_dir: Path) -> None:
        self.device_id = device_id
        self.path = Path(state_dir) / "health.json"
        remove_stale_temps(self.path.parent, (f".{self.path.name}.*.tmp",))  # a kill mid-beat
        self.started = time.time()
        self.providers: dict[str, Callable[[], Any]] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def provide(self, name: str, provider: Callable[[], Any]) -> None:
        self.providers[name] = provider

    def error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def snapshot(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "device_id": self.device_id,
            "at": time.time(),
            "uptime_s": round(time.time() - self.started, 1),
            "cpu_temp_c": cpu_temperature(),
            "peak_rss_mb": peak_rss_mb(),
        }
        for name, provider in self.providers.items():
            try:
                report[name] = provider()
            except Exception as exc:  # one broken provider must not hide the rest
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report["last_error"] = self.last_error
        report["last_error_at"] = self.last_error_at
        return report

    def beat(self, send: Callable[[str, bytes], None] | None = None) -> dict[str, Any]:
        """Write health.json; also `send` it (best effort: the next beat supersedes it).

        Raises:
            OSError: health.json not written (a full disk); it was still sent.
        """
        report = self.snapshot()
        body = (json.dumps(report, indent=2, default=str) + "\n").encode()
        try:
            write_atomic(self.path, body)
        finally:
            if send is not None:
                try:
                    send(self.device_id, body)
                except Exception as exc:  # offline: health.json still has it
                    log.info("heartbeat not sent (%s: %s)", type(exc).__name__, exc)
        return report
