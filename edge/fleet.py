"""`python -m edge fleet --telemetry URI`: the fleet table from the heartbeats the bins upload.

Reading and summarizing the heartbeats is the core's (`wastesort.fleet`); this module renders
the table. URI is the telemetry prefix: `s3://<telemetry bucket>/telemetry`, or a local folder
with the same layout (an `aws s3 sync` of it).
"""

from __future__ import annotations

import json
from typing import Any

from wastesort.fleet import (
    HEARTBEAT,
    NONE,
    FleetError,
    open_store,
    read_heartbeats,
    summarize,
)

__all__ = ["FleetError", "read_heartbeats", "render", "run", "summarize"]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _share(value: float | None) -> str:
    return NONE if value is None else f"{value:.0%}"


def _cell(value: Any, width: int = 0) -> str:
    text = NONE if value is None or value == "" else str(value)
    text = " ".join(text.split())  # an error's newlines would break the table
    return text if not width or len(text) <= width else text[: width - 1] + "…"


COLUMNS = (
    "device",
    "version",
    "runtime",
    "delegate",
    "queue",
    "age",
    "stale",
    "drift",
    "unsure",
    "error",
)


def render(fleet: dict[str, Any]) -> str:
    """The table, then the counts: which version each bin runs, which lag, which are silent."""
    lines = []
    table = [
        (
            _cell(r["device"]),
            _cell(r["version"]),
            _cell(r["runtime"]),
            _cell(r["accelerator"]),
            _cell(r["queue_depth"]),
            _age(r["age_s"]),
            "STALE" if r["stale"] else "ok",
            _cell(r["drift"]),
            _share(r["uncertain_share"]),
            _cell(r["last_error"], 48),
        )
        for r in fleet["devices"]
    ]
    widths = [max(len(row[i]) for row in [COLUMNS, *table]) for i in range(len(COLUMNS))]
    for row in [COLUMNS, *table]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    total = len(fleet["devices"])
    lines.append("")
    lines.append(f"{total} device(s); versions:")
    by_version: dict[str, list[str]] = {}
    for r in fleet["devices"]:
        by_version.setdefault(r["version"] or NONE, []).append(r["device"])
    for version, count in fleet["versions"].items():
        mark = "  (expected)" if version == fleet["expected_version"] else ""
        lines.append(f"  {version}: {count}{mark}  {', '.join(by_version[version])}")
    if fleet["behind"]:
        lines.append(f"behind {fleet['expected_version']}: {', '.join(fleet['behind'])}")
    minutes = f"{fleet['stale_minutes']:g}"
    lines.append(f"stale (no heartbeat for {minutes} min): {', '.join(fleet['stale']) or 'none'}")
    return "\n".join(lines)


def run(uri: str, *, stale_minutes: float, as_json: bool, expect: str | None = None) -> str:
    """The text `python -m edge fleet` prints.

    Raises:
        FleetError: the URI cannot be read.
    """
    store = open_store(uri)
    try:
        beats = read_heartbeats(store)
    except Exception as exc:  # no credentials, no network: one line, not a traceback
        if isinstance(exc, FleetError):
            raise
        raise FleetError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from None
    fleet = summarize(beats, stale_minutes=stale_minutes, expect=expect)
    fleet["telemetry"] = uri
    if as_json:
        return json.dumps(fleet, indent=2, default=str)
    if not beats:
        return f"no heartbeats under {uri} (expected <device id>/{HEARTBEAT})"
    return render(fleet)
