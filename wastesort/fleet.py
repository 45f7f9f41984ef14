"""The fleet from the heartbeats the bins upload: read them, and summarize them per device.

Each device's telemetry sink writes its latest heartbeat to `<prefix>/<device id>/heartbeat.json`
(edge/telemetry/sinks.py). The store is that prefix (`s3://<telemetry bucket>/telemetry` or a
local folder with the same layout); a bucket root that holds a `telemetry/` prefix is read there.
The core owns this so that `python -m edge fleet`, the rollout check and the scheduled fleet
watch read heartbeats one way; it needs no runtime and no TensorFlow.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wastesort.errors import NotFoundError, RegistryError

if TYPE_CHECKING:  # at runtime the registry package imports this module (its rollout check)
    from wastesort.registry.store import RegistryStore

DEVICE_PREFIX = "telemetry"
"""The prefix under which devices write `<device id>/...` in the telemetry bucket."""

HEARTBEAT = "heartbeat.json"
DEFAULT_STALE_MINUTES = 30.0
NONE = "-"


class FleetError(Exception):
    """The URI cannot be read (exit 2)."""


def open_store(uri: str) -> RegistryStore:
    """The store under `uri`: `s3://bucket/prefix` or a local folder (which must exist)."""
    if uri.startswith("s3://"):
        from wastesort.registry.s3 import S3Store  # noqa: PLC0415

        try:
            return S3Store(uri)
        except RegistryError as exc:
            raise FleetError(str(exc)) from None
    if "://" in uri and not uri.startswith("file://"):
        raise FleetError(f"{uri!r}: expected a folder or s3://bucket/prefix")
    from wastesort.registry.local import LocalStore  # noqa: PLC0415

    folder = Path(uri.removeprefix("file://")).expanduser()
    if not folder.is_dir():
        raise FleetError(f"{folder}: no such folder")
    return LocalStore(folder)


def _device_names(store: RegistryStore) -> Iterator[str]:
    """The first path segment of every key, once each, in order. On S3 one short listing per
    device: after `dev/...` the next listing starts after `dev0` ('0' follows '/'), so the
    device's events are never listed."""
    root = getattr(store, "root", None)
    if isinstance(root, Path):  # a local folder: its subfolders
        try:
            names = sorted(p.name for p in root.iterdir() if p.is_dir())
        except OSError as exc:
            raise FleetError(f"cannot read {root}: {exc}") from None
        yield from (name for name in names if not name.startswith("."))
        return
    start_after = ""
    while True:
        try:
            key = next(iter(store.list("", start_after)), None)
        except RegistryError as exc:
            raise FleetError(str(exc)) from None
        if key is None:
            return
        name, slash, _ = key.partition("/")
        if slash:
            yield name
        start_after = name + "0" if slash else key


def _read(store: RegistryStore, device: str) -> dict[str, Any] | None:
    """The device's heartbeat; None when it has none; `{"unreadable": why}` when corrupt."""
    try:
        body = store.get(f"{device}/{HEARTBEAT}")
    except NotFoundError:
        return None
    except RegistryError as exc:
        raise FleetError(str(exc)) from None
    try:
        beat = json.loads(body)
    except ValueError as exc:
        return {"unreadable": f"not JSON: {exc}"}
    return beat if isinstance(beat, dict) else {"unreadable": "not a JSON object"}


def read_heartbeats(store: RegistryStore) -> dict[str, dict[str, Any]]:
    """`{device id: heartbeat}` for every device with a heartbeat under the store."""
    beats: dict[str, dict[str, Any]] = {}
    names = list(_device_names(store))
    for device in names:
        if (beat := _read(store, device)) is not None:
            beats[device] = beat
    if not beats and DEVICE_PREFIX in names:  # pointed at the bucket root
        return read_heartbeats(_sub_store(store, DEVICE_PREFIX))
    return beats


def _sub_store(store: RegistryStore, prefix: str) -> RegistryStore:
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        from wastesort.registry.local import LocalStore  # noqa: PLC0415

        return LocalStore(root / prefix)
    from wastesort.registry.s3 import S3Store  # noqa: PLC0415

    return S3Store(f"{store.uri}/{prefix}", client=getattr(store, "_client", None))


def _section(beat: dict[str, Any], name: str) -> dict[str, Any]:
    value = beat.get(name)
    return value if isinstance(value, dict) else {}


def _drift(beat: dict[str, Any]) -> str | None:
    value = beat.get("drift")
    if isinstance(value, dict):
        value = value.get("verdict")
    return str(value) if value is not None else None


def device_row(device: str, beat: dict[str, Any], now: float, stale_s: float) -> dict[str, Any]:
    """One device's line: what it serves, on what, its backlog, its last error, its age, its
    drift verdict and its share of `uncertain` decisions (a dirty camera shows there first)."""
    model, telemetry = _section(beat, "model"), _section(beat, "telemetry")
    runtime = model.get("runtime") if isinstance(model.get("runtime"), dict) else {}
    at = beat.get("at")
    age = max(0.0, now - at) if isinstance(at, int | float) else None
    error = beat.get("unreadable") or beat.get("last_error") or model.get("last_error")
    return {
        "device": device,
        "version": model.get("serving") or model.get("version"),
        "runtime": " ".join(str(runtime[k]) for k in ("name", "version") if runtime.get(k)) or None,
        "accelerator": model.get("accelerator"),
        "queue_depth": telemetry.get("depth"),
        "last_error": str(error) if error else None,
        "last_error_at": beat.get("last_error_at"),
        "heartbeat_at": at if age is not None else None,
        "age_s": round(age, 1) if age is not None else None,
        "stale": age is None or age > stale_s,
        "drift": _drift(beat),
        "uncertain_share": device_signals(beat)["uncertain_share"],
    }


def device_signals(beat: dict[str, Any]) -> dict[str, Any]:
    """How one device is doing, for comparing groups of devices (the rollout check): the alias
    it follows, its decisions, its `uncertain` share and error count where its heartbeat has
    them, and `{version: code}` for the versions it refused (`model.refusals`)."""
    model, drift = _section(beat, "model"), _section(beat, "drift")
    decisions = beat.get("decisions")
    counts = decisions if isinstance(decisions, dict) else {"total": decisions}
    total, uncertain = counts.get("total"), counts.get("uncertain")
    share = beat.get("uncertain_share", drift.get("uncertain_share"))
    if share is None and _count(uncertain) is not None and _count(total):
        share = uncertain / total
    refusals = model.get("refusals") if isinstance(model.get("refusals"), dict) else {}
    return {
        "alias": model.get("alias"),
        "decisions": _count(total),
        "uncertain_share": float(share) if isinstance(share, int | float) else None,
        "errors": _count(beat.get("errors")),
        "refused": {
            str(version): str(record.get("code") or "refused")
            for version, record in refusals.items()
            if isinstance(record, dict) and record.get("final")
        },
    }


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarize(
    beats: dict[str, dict[str, Any]],
    *,
    now: float | None = None,
    stale_minutes: float = DEFAULT_STALE_MINUTES,
    expect: str | None = None,
    expect_for: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """The fleet as one JSON-ready object: devices, per-version counts, stale and behind.

    `expected` is `expect`, else the version most devices serve (ties: the greatest id); a
    device serving another version (or none) is `behind`. `expect_for(device)`, where given,
    is what that device should serve (a staged rollout's cohort runs the new version); where it
    answers None the device is held to `expected`.
    """
    now = time.time() if now is None else now
    rows = [device_row(d, b, now, stale_minutes * 60) for d, b in sorted(beats.items())]
    versions = Counter(row["version"] or NONE for row in rows)
    served = Counter({v: n for v, n in versions.items() if v != NONE})
    expected = expect or (max(served, key=lambda v: (served[v], v)) if served else None)

    def wanted(device: str) -> str | None:
        return (expect_for(device) if expect_for is not None else None) or expected

    return {
        "generated_at": now,
        "stale_minutes": stale_minutes,
        "devices": rows,
        "versions": dict(sorted(versions.items(), key=lambda item: (-item[1], item[0]))),
        "expected_version": expected,
        "behind": [
            r["device"] for r in rows if (want := wanted(r["device"])) and r["version"] != want
        ],
        "stale": [r["device"] for r in rows if r["stale"]],
        "drift": dict(Counter(r["drift"] for r in rows if r["drift"])),
    }
