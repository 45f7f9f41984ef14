"""The bin's prediction records and what the heartbeat says about them.

Each decision's deciding frame (or a `records.sample` share of them) becomes a record
(`wastesort.records.make_record`, with the device as its source) queued in the telemetry file
(`edge.telemetry.records.RecordQueue`) and uploaded to `records/<device id>/...`. The heartbeat
gets two facts from here, both computed on the heartbeat thread, never in the frame loop:
- `drift`: a rolling verdict of `wastesort.drift` over the serving version's last
  `records.drift_window` records against its reference file (None for a version without
  one), recomputed once `records.drift_every` new records came, so a dirty lens on one bin
  shows up even when the fleet is fine;
- `uncertain_share` and `recent_decisions`: the `uncertain` share of the bin's recent
  decisions, for the fleet table and the rollout check (`wastesort.fleet.device_signals`).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wastesort import drift
from wastesort.records import make_record
from wastesort.scoring import UNCERTAIN

if TYPE_CHECKING:
    from edge.config import RecordsConfig
    from edge.decide import Decision
    from edge.health import Health
    from edge.telemetry.records import RecordQueue
    from wastesort.classifier import Classifier, Prediction

log = logging.getLogger(__name__)

RECENT_DECISIONS = 500
"""Decisions the heartbeat's `uncertain_share` is taken over."""


class EdgeRecords:
    """Records a bin's decisions and judges its recent ones (see the module docstring).

    Args:
        config: the `records:` section.
        device_id: the records' source and device.
        queue: where records wait for upload (None: telemetry is off; the heartbeat's
            verdict still judges the records seen since the start).
        rng: the sampler's random source (tests pass a seeded one).
    """

    def __init__(
        self,
        config: RecordsConfig,
        *,
        device_id: str,
        queue: RecordQueue | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.queue = queue
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self.errors = 0
        self._window: deque[dict[str, Any]] = deque(maxlen=config.drift_window)
        self._decisions: deque[bool] = deque(maxlen=RECENT_DECISIONS)
        self._added = 0
        self._lock = threading.Lock()
        self._verdict: dict[str, Any] | None = None
        self._judged_at = -1
        self._baseline: tuple[str, drift.Baseline] | None = None
        if queue is not None:  # a restart keeps judging the records it had
            try:
                self._window.extend(queue.recent(config.drift_window))
            except (sqlite3.Error, ValueError) as exc:
                log.warning("records of the last run not read: %s", exc)

    @property
    def on(self) -> bool:
        return self.config.enabled and self.config.sample > 0

    def observe(self, decision: Decision, prediction: Prediction | None) -> dict[str, Any] | None:
        """Count a decision; record its frame's prediction when sampled. Never raises: a
        record that cannot be stored is counted (`errors`) and logged, the bin sorts on."""
        with self._lock:
            self._decisions.append(decision.label == UNCERTAIN)
        if not self.on or prediction is None or self.rng.random() >= self.config.sample:
            return None
        record = make_record(
            prediction, source=self.device_id, at=datetime.now(UTC), device=self.device_id
        )
        with self._lock:
            self._window.append(record)
            self._added += 1
        if self.queue is not None:
            try:
                self.queue.add(record)
            except (sqlite3.Error, OSError, ValueError) as exc:
                self.errors += 1
                log.warning("prediction record not queued: %s: %s", type(exc).__name__, exc)
        return record

    # --- the heartbeat --------------------------------------------------------------------------

    def attach(self, health: Health, classifier: Callable[[], Classifier | None]) -> None:
        """Give the heartbeat `drift`, `uncertain_share`, `recent_decisions` and `records`."""
        health.provide("drift", lambda: self.drift(classifier()))
        health.provide("uncertain_share", lambda: self.decisions()["uncertain_share"])
        health.provide("recent_decisions", self.decisions)
        health.provide("records", self.status)

    def decisions(self) -> dict[str, Any]:
        """`{"n", "uncertain", "uncertain_share"}` over the last `RECENT_DECISIONS` decisions."""
        with self._lock:
            seen = list(self._decisions)
        unsure = sum(seen)
        share = round(unsure / len(seen), 4) if seen else None
        return {"n": len(seen), "uncertain": unsure, "uncertain_share": share}

    def status(self) -> dict[str, Any]:
        """The record queue's counters (what waits, what was uploaded, evicted, not stored)."""
        status: dict[str, Any] = {"enabled": self.on, "errors": self.errors}
        if self.queue is not None:
            status.update(self.queue.stats())
        return status

    def drift(self, classifier: Classifier | None) -> dict[str, Any] | None:
        """The rolling verdict for the serving version; None when it has no reference file.
        Recomputed once `drift_every` new records came (at each new one while there were too
        few to judge), or the version changed."""
        if classifier is None or classifier.reference is None:
            return None
        with self._lock:
            cached = self._verdict
            new = self._added - self._judged_at
            waiting = cached is not None and cached["verdict"] == drift.INSUFFICIENT
            fresh = new < self.config.drift_every and not (waiting and new > 0)
            if cached is not None and fresh and cached["model_version"] == classifier.version:
                return cached
            records = [r for r in self._window if r.get("model_version") == classifier.version]
            self._judged_at = self._added
        verdict = judge(
            records,
            classifier,
            baseline=self._baseline_of(classifier),
            permutations=self.config.drift_permutations,
        )
        with self._lock:
            self._verdict = verdict
        return verdict

    def _baseline_of(self, classifier: Classifier) -> drift.Baseline:
        if self._baseline is None or self._baseline[0] != classifier.version:
            assert classifier.reference is not None
            self._baseline = (
                classifier.version,
                drift.Baseline.from_reference(classifier.reference),
            )
        return self._baseline[1]

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()


def judge(
    records: list[dict[str, Any]],
    classifier: Classifier,
    *,
    baseline: drift.Baseline | None = None,
    permutations: int = 200,
) -> dict[str, Any]:
    """A heartbeat-sized drift report of `records` against the version's reference."""
    assert classifier.reference is not None
    started = time.perf_counter()
    baseline = baseline or drift.Baseline.from_reference(classifier.reference)
    report = drift.report(
        baseline,
        drift.Window.from_records(records, classifier.labels),
        uncertain_threshold=classifier.entry.uncertain_threshold,
        thresholds=drift.Thresholds(permutations=permutations),
        seed=0,
    )
    data = report.to_dict()
    return {
        "verdict": data["verdict"],
        "n": data["n"],
        "model_version": classifier.version,
        "reason": data["reason"],
        "expected_accuracy": data["expected_accuracy"]["current"],
        "tests": {name: test["verdict"] for name, test in data["tests"].items()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


__all__ = ["RECENT_DECISIONS", "EdgeRecords", "judge"]
