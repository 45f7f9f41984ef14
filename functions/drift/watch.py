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

import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from functions.api import metric_names as m
from functions.drift.fleet_watch import watch_fleet
from functions.drift.results import COUNT, NONE, Emission, Outcome
from wastesort import drift
from wastesort.capture_ids import API_SOURCE
from wastesort.errors import WastesortError
from wastesort.manifest import Manifest, ModelEntry
from wastesort.records import ReadStats, parse_at, read_records
from wastesort.reference import Reference
from wastesort.registry.registry import Registry
from wastesort.registry.store import RegistryStore
from wastesort.scoring import UNCERTAIN

log = logging.getLogger(__name__)

SCORE_CAP = 10.0
SKIPPED = "skipped"
ERROR = "error"


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
    read_threads: int = 16
    """Records objects fetched at once (bounded: one GET per object is what a window costs)."""
    min_read_time_left_s: float = 60.0
    """Stop reading records when less than this remains, and judge what was read (logged)."""


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
    *,
    now: datetime | None = None,
) -> None:
    """Judge each device's latest version, starting at a place that moves every hour (the
    window's end hour picks it), so a run short of time leaves a different tail each time."""
    devices = sorted(groups.latest.items())
    if devices and now is not None:
        start = rotation(now, len(devices))
        devices = devices[start:] + devices[:start]
    for device, (_, version) in devices:
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


def rotation(now: datetime, count: int) -> int:
    """Where this run starts among `count` devices: a stable hash of the run's hour."""
    hour = now.replace(minute=0, second=0, microsecond=0).isoformat()
    digest = hashlib.sha256(hour.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def fleet_watch(
    telemetry: RegistryStore, baselines: Baselines, now: datetime, config: WatchConfig, out: Outcome
) -> None:
    """`watch_fleet` against `production`: a rollout's cohort is expected on the new version."""
    expected, expect_for = None, None
    try:
        production = baselines.manifest.aliases.get("production")
        if production is not None:
            expected, expect_for = production.version_for(None), production.version_for
    except WastesortError:
        log.exception("cannot read the manifest: devices behind are judged by majority")
    watch_fleet(
        telemetry, expected, now, out, stale_minutes=config.stale_minutes, expect_for=expect_for
    )


def read_window(
    records: RegistryStore,
    now: datetime,
    config: WatchConfig,
    out: Outcome,
    time_left_s: Callable[[], float],
) -> _Groups:
    """The window's records, grouped; reading stops (logged, `partial`) when time runs short."""
    since = now - timedelta(hours=config.window_hours)
    stats = ReadStats()
    try:
        groups = group(
            read_records(
                records,
                since=since,
                until=now,
                stats=stats,
                threads=config.read_threads,
                stop=lambda: time_left_s() < config.min_read_time_left_s,
            ),
            size=config.max_records,
            seed=config.seed,
        )
    except WastesortError:
        log.exception("cannot read the prediction records")
        out.errors += 1
        groups = _Groups()
    if stats.partial:
        log.warning(
            "out of time reading records: window partial, judging %d records of %d objects",
            stats.records,
            stats.objects,
            extra={"window": "partial", "records": stats.records, "objects": stats.objects},
        )
    if groups.unversioned:
        log.warning("%d records without a model_version were ignored", groups.unversioned)
    return groups


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
    if telemetry is not None:  # first: a few reads, and the stale count must not wait on records
        fleet_watch(telemetry, baselines, now, config, out)
    if records is not None:
        groups = read_window(records, now, config, out, time_left_s)
        judge_versions(groups, baselines, config, out)
        judge_devices(groups, baselines, config, out, time_left_s, now=now)
    if out.errors:
        out.emissions.append(Emission({}, [(m.METRIC_DRIFT_ERRORS, COUNT, float(out.errors))]))
    return out
