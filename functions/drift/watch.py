"""One pass of the drift and fleet watch: records -> reports per version and device -> metrics.

The statistics are the core's (`wastesort.drift.report`, the same as the CLI's and the bin's);
this module only groups the window's records, finds each version's reference file through the
registry, and turns the reports and the fleet summary (`wastesort.fleet`) into metric rows.

- Each group (a model version, across every source; a device, for the version it ran last in
  the window) keeps a seeded uniform sample of at most `max_records` records (reservoir
  sampling), so memory is bounded however busy the hour was; `Records` counts them all.
- A window too small to judge gives `NotEnoughData` and no verdict: never a false alarm.
- A version without a reference file is logged and skipped; a report that fails is logged and
  counted (`DriftErrors`), and the other groups are judged all the same.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from functions.api import metric_names as m
from wastesort import drift
from wastesort.capture_ids import API_SOURCE
from wastesort.errors import WastesortError
from wastesort.fleet import FleetError, read_heartbeats, summarize
from wastesort.manifest import Manifest, ModelEntry
from wastesort.records import parse_at, read_records
from wastesort.reference import Reference
from wastesort.registry.registry import Registry
from wastesort.registry.store import RegistryStore
from wastesort.scoring import UNCERTAIN

log = logging.getLogger(__name__)

COUNT, NONE = "Count", "None"
SCORE_CAP = 10.0
SKIPPED = "skipped"
ERROR = "error"
MAX_LISTED = 50


@dataclass(frozen=True)
class WatchConfig:
    """What one run looks at; the CDK context keys set them (infra/config.py)."""

    window_hours: float = 6.0
    stale_minutes: float = 30.0
    max_records: int = 1000
    """Per group: the sample judged (the MMD test cuts to 500 anyway)."""
    thresholds: drift.Thresholds = field(default_factory=drift.Thresholds)
    seed: int = 0
    min_time_left_s: float = 20.0
    """Stop judging devices when less than this remains of the invocation (logged)."""


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


class Sample:
    """A seeded uniform sample of at most `size` items of a stream (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.rng = rng
        self.items: list[dict[str, Any]] = []
        self.seen = 0
        self.uncertain = 0

    def add(self, item: dict[str, Any]) -> None:
        self.seen += 1
        self.uncertain += item.get("decision") == UNCERTAIN
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


def device_of(record: dict[str, Any]) -> str | None:
    """The bin a record came from: its `device`, else a source that is not the API."""
    device = record.get("device") or record.get("source")
    return str(device) if device and device != API_SOURCE else None


def drift_score(report: drift.Report) -> float:
    """-log10 of the smallest p-value of the tests that voted, capped (`METRIC_DRIFT_SCORE`)."""
    ps = [
        t.p_value
        for t in report.tests.values()
        if t.verdict != drift.SKIPPED and t.p_value is not None
    ]
    if not ps:
        return 0.0
    return min(SCORE_CAP, -math.log10(max(min(ps), 10**-SCORE_CAP)))


@dataclass
class _Groups:
    versions: dict[str, Sample] = field(default_factory=dict)
    devices: dict[tuple[str, str], Sample] = field(default_factory=dict)
    latest: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    unversioned: int = 0


def group(records: Iterable[dict[str, Any]], *, size: int, seed: int) -> _Groups:
    """Sample the window's records per version and per (device, version)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    groups = _Groups()
    for record in records:
        version = record.get("model_version")
        if not isinstance(version, str) or not version:
            groups.unversioned += 1
            continue
        groups.versions.setdefault(version, Sample(size, rng)).add(record)
        device = device_of(record)
        if device is None:
            continue
        groups.devices.setdefault((device, version), Sample(size, rng)).add(record)
        at = parse_at(record["at"])
        if device not in groups.latest or at >= groups.latest[device][0]:
            groups.latest[device] = (at, version)
    return groups


class Baselines:
    """Each version's entry and reference baseline, read once per run (sha256 verified)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._manifest: Manifest | None = None
        self._loaded: dict[str, tuple[ModelEntry, drift.Baseline | None]] = {}

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = self.registry.manifest()
        return self._manifest

    def get(self, version: str) -> tuple[ModelEntry, drift.Baseline | None]:
        if version not in self._loaded:
            entry = self.manifest.entry(version)
            baseline = None
            if entry.reference is not None:
                _, data = self.registry.fetch_content(entry.reference)
                baseline = drift.Baseline.from_reference(Reference.loads(data))
            self._loaded[version] = (entry, baseline)
        return self._loaded[version]

    def aliases_of(self, version: str) -> list[str]:
        """The aliases whose readers without a device id (the API) get `version`."""
        return sorted(
            name
            for name, alias in self.manifest.aliases.items()
            if alias.version_for(None) == version
        )


def judge(sample: Sample, version: str, baselines: Baselines, config: WatchConfig) -> dict:
    """One group's report, as `{"verdict", "n", "records", "score", "expected_accuracy", ...}`."""
    entry, baseline = baselines.get(version)
    out: dict[str, Any] = {"records": sample.seen, "n": len(sample.items)}
    if baseline is None:
        return {**out, "verdict": SKIPPED, "reason": f"version {version} has no reference file"}
    window = drift.Window.from_records(sample.items, baseline.labels)
    report = drift.report(
        baseline,
        window,
        uncertain_threshold=entry.uncertain_threshold,
        thresholds=config.thresholds,
        seed=config.seed,
    )
    return {
        **out,
        "verdict": report.verdict,
        "reason": report.reason,
        "score": round(drift_score(report), 3),
        "expected_accuracy": report.expected_accuracy["current"],
    }


def _verdict_metrics(result: dict[str, Any], verdict_name: str) -> list[tuple[str, str, float]]:
    rows = [(m.METRIC_DRIFT_RECORDS, COUNT, float(result["records"]))]
    verdict = result["verdict"]
    if verdict == drift.INSUFFICIENT:
        rows.append((m.METRIC_NOT_ENOUGH_DATA, COUNT, 1.0))
    elif verdict in m.DRIFT_VERDICT_VALUES:
        rows.append((verdict_name, NONE, float(m.DRIFT_VERDICT_VALUES[verdict])))
        rows.append((m.METRIC_DRIFT_SCORE, NONE, float(result["score"])))
        if result.get("expected_accuracy") is not None:
            rows.append((m.METRIC_EXPECTED_ACCURACY, NONE, float(result["expected_accuracy"])))
    return rows


def _judged(
    out: Outcome,
    what: str,
    sample: Sample,
    version: str,
    *,
    baselines: Baselines,
    config: WatchConfig,
) -> dict[str, Any]:
    """`judge`, with a failure logged and counted instead of raised."""
    try:
        return judge(sample, version, baselines, config)
    except WastesortError as exc:  # an unknown version, a bad reference file: no traceback
        log.warning("drift report for %s failed: %s", what, exc)
        out.errors += 1
        return {"verdict": ERROR, "reason": f"{type(exc).__name__}: {exc}"}
    except (KeyError, ValueError, TypeError, ArithmeticError) as exc:  # records that do not fit
        log.exception("drift report for %s failed", what)
        out.errors += 1
        return {"verdict": ERROR, "reason": f"{type(exc).__name__}: {exc}"}


def judge_versions(
    groups: _Groups, baselines: Baselines, config: WatchConfig, out: Outcome
) -> None:
    for version, sample in sorted(groups.versions.items()):
        result = _judged(
            out, f"version {version}", sample, version, baselines=baselines, config=config
        )
        out.versions[version] = result
        if result["verdict"] == ERROR:
            continue
        rows = _verdict_metrics(result, m.METRIC_DRIFT_VERDICT)
        out.emissions.append(Emission({m.DIM_MODEL_VERSION: version}, rows))
        for alias in baselines.aliases_of(version):
            out.emissions.append(Emission({m.DIM_ALIAS: alias}, rows))


def judge_devices(
    groups: _Groups,
    baselines: Baselines,
    config: WatchConfig,
    out: Outcome,
    time_left_s: Callable[[], float],
) -> None:
    for device, (_, version) in sorted(groups.latest.items()):
        if time_left_s() < config.min_time_left_s:
            log.warning(
                "out of time: %d devices not judged this run", len(groups.latest) - len(out.devices)
            )
            return
        sample = groups.devices[(device, version)]
        result = _judged(
            out, f"device {device}", sample, version, baselines=baselines, config=config
        )
        result["model_version"] = version
        out.devices[device] = result
        if result["verdict"] == ERROR:
            continue
        rows = _verdict_metrics(result, m.METRIC_DEVICE_DRIFT_VERDICT)
        share = sample.uncertain / sample.seen if sample.seen else 0.0
        rows.append((m.METRIC_DEVICE_UNCERTAIN_SHARE, NONE, round(share, 4)))
        out.emissions.append(Emission({m.DIM_DEVICE: device}, rows))


def watch_fleet(
    telemetry: RegistryStore, expected: str | None, now: datetime, config: WatchConfig, out: Outcome
) -> None:
    try:
        beats = read_heartbeats(telemetry)
    except FleetError:
        log.exception("cannot read the fleet's heartbeats")
        out.errors += 1
        return
    fleet = summarize(
        beats, now=now.timestamp(), stale_minutes=config.stale_minutes, expect=expected
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


def run(
    *,
    records: RegistryStore | None,
    registry: Registry,
    telemetry: RegistryStore | None,
    now: datetime,
    config: WatchConfig | None = None,
    time_left_s: Callable[[], float] = lambda: math.inf,
) -> Outcome:
    """Judge the window `[now - window_hours, now)` and read the fleet; never raises for one
    group's failure (it is counted in `errors` and `DriftErrors`).

    Args:
        records: the store whose `records/` prefix holds the prediction records (the capture
            bucket's root); None skips the drift reports.
        registry: where each version's entry and reference file are read.
        telemetry: the heartbeats' store (`wastesort.fleet`); None skips the fleet watch.
        now: the end of the window (the schedule's time).
        config: window, stale limit, thresholds, sample size.
        time_left_s: seconds left in the invocation; devices wait for the next run when short.
    """
    config = config or WatchConfig()
    out = Outcome()
    baselines = Baselines(registry)
    if records is not None:
        since = now - timedelta(hours=config.window_hours)
        try:
            groups = group(
                read_records(records, since=since, until=now),
                size=config.max_records,
                seed=config.seed,
            )
        except WastesortError:
            log.exception("cannot read the prediction records")
            out.errors += 1
            groups = _Groups()
        if groups.unversioned:
            log.warning("%d records without a model_version were ignored", groups.unversioned)
        judge_versions(groups, baselines, config, out)
        judge_devices(groups, baselines, config, out, time_left_s)
    if telemetry is not None:
        expected = None
        try:
            production = baselines.manifest.aliases.get("production")
            expected = production.version_for(None) if production else None
        except WastesortError:
            log.exception("cannot read the manifest: devices behind are judged by majority")
        watch_fleet(telemetry, expected, now, config, out)
    if out.errors:
        out.emissions.append(Emission({}, [(m.METRIC_DRIFT_ERRORS, COUNT, float(out.errors))]))
    return out
