"""A staged rollout seen from the bins: each updater resolves with its device id, so a bin
outside the cohort never downloads the new version; an abort (the rollout check over the
heartbeats the bins write) rolls the cohort back, and the bins follow on their next poll."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge.config import ModelConfig
from edge.health import Health
from edge.updater import Updater
from tests.edge.conftest import publish
from wastesort.manifest import ArtifactRef
from wastesort.registry import Registry
from wastesort.registry.rollout import Thresholds, in_cohort, run_check

PERCENT = 34
DEVICES = ("bin-1", "bin-2", "bin-3")  # at 34%, bin-2 is in the cohort; bin-1 and bin-3 not


class Watched(Registry):
    """A registry that remembers which artifacts it handed out."""

    fetched: list[str]

    def fetch_content(self, ref: ArtifactRef) -> tuple[Path, bytes]:
        self.fetched.append(ref.path)
        return super().fetch_content(ref)


def bin_updater(tmp_path: Path, registry: Registry, device: str) -> Updater:
    watched = Watched(registry.store, cache_dir=tmp_path / device / "cache")
    watched.fetched = []
    config = ModelConfig(registry=registry.uri, num_threads=1)
    return Updater(config, tmp_path / device, registry=watched, device_id=device)


@pytest.fixture
def bins(tmp_path: Path, edge_registry: Registry, tiny_models: Path) -> dict[str, Updater]:
    """Three bins serving v1; v2 published (not promoted)."""
    updaters = {d: bin_updater(tmp_path, edge_registry, d) for d in DEVICES}
    for updater in updaters.values():
        assert updater.start().version == "v1"
    publish(edge_registry, tiny_models / "tiny_float.tflite", "v2", float_model=True)
    return updaters


def test_the_simulated_bins_split_as_the_docs_say():
    assert [in_cohort(d, PERCENT) for d in DEVICES] == [False, True, False]


def test_only_the_cohort_downloads_the_new_version(bins, edge_registry):
    edge_registry.promote("production", "v2", rollout=PERCENT, force=True)
    new_model = edge_registry.manifest().versions["v2"].artifact.path
    for device, updater in bins.items():
        updater.registry.fetched.clear()
        changed = updater.check()
        if device == "bin-2":
            assert changed is not None and changed.version == "v2"
            assert new_model in updater.registry.fetched
        else:
            assert changed is None
            assert updater.status()["version"] == "v1"
            assert not any("/v2/" in path for path in updater.registry.fetched)
    # A bin without a device id (an old config) is never in a cohort.
    anonymous = Updater(
        ModelConfig(registry=edge_registry.uri, num_threads=1), bins["bin-1"].dir.parent / "x"
    )
    assert anonymous.start().version == "v1"


def heartbeat(updater: Updater, health_dir: Path, *, failing: bool) -> dict:
    """The heartbeat the runner sends: `Health` with the updater's `model` section."""
    health = Health(updater.device_id or "?", health_dir)
    status = updater.status()
    health.provide("model", lambda: {**status, "serving": status["version"]})
    if failing:
        health.error("servo stalled while sorting")
    return health.snapshot()


def test_an_abort_rolls_the_cohort_back_and_the_bins_follow(bins, edge_registry, tmp_path):
    edge_registry.promote("production", "v2", rollout=PERCENT, force=True)
    for updater in bins.values():
        updater.check()
    telemetry = tmp_path / "telemetry"
    beats = {}
    for device, updater in bins.items():
        failing = updater.status()["version"] == "v2"
        beats[device] = heartbeat(updater, tmp_path / device, failing=failing)
        (telemetry / device).mkdir(parents=True)
        (telemetry / device / "heartbeat.json").write_text(json.dumps(beats[device]))
    assert [b["model"]["version"] for b in beats.values()] == ["v1", "v2", "v1"]

    verdict = run_check(edge_registry, beats, thresholds=Thresholds(min_devices=1))
    assert verdict.action == "abort" and verdict.rolled_back, verdict.reasons
    assert verdict.cohort["devices"] == ["bin-2"]
    assert edge_registry.manifest().aliases["production"].rollout is None

    for device, updater in bins.items():
        updater.check()
        assert updater.status()["version"] == "v1", device
        assert (updater.take_pending() is not None) == (device == "bin-2")


def test_a_cohort_bin_refusing_the_new_version_reports_why_and_aborts(
    tmp_path, edge_registry, tiny_models
):
    updaters = {d: bin_updater(tmp_path, edge_registry, d) for d in DEVICES}
    for updater in updaters.values():
        updater.start()
    publish(
        edge_registry, tiny_models / "tiny_float.tflite", "v2", float_model=True, wrong_golden=True
    )
    edge_registry.promote("production", "v2", rollout=PERCENT, force=True)
    beats = {}
    for device, updater in updaters.items():
        assert updater.check() is None  # the cohort bin refuses v2 (its golden set fails)
        beats[device] = heartbeat(updater, tmp_path / device, failing=False)
    refusal = beats["bin-2"]["model"]["refusals"]["v2"]
    assert (refusal["code"], refusal["final"]) == ("self_test_failed", True)
    verdict = run_check(edge_registry, beats, now=time.time())
    assert verdict.rolled_back and verdict.cohort["self_test_failed"] == ["bin-2"]
