"""Staged rollout: stable cohorts, resolution defined once (no device id -> the stable version),
promote/complete/roll back with history, the schema-1 refusal, and the abort check over
heartbeats (CLI and `run_check`). Runs in the Pi-like venv too: no TensorFlow, no boto3."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import tiny_fields
from tests.core.test_cli import cli
from wastesort.errors import RegistryError
from wastesort.registry import Registry
from wastesort.registry.rollout import (
    SCHEMA_EXPLANATION,
    Thresholds,
    bucket,
    describe,
    evaluate,
    in_cohort,
    run_check,
)

PINNED = Path(__file__).parent / "fixtures" / "manifest_v1.py"
IDS = [f"bin-{i:05d}" for i in range(10_000)]
IN, OUT = "bin-a", "bin-b"  # buckets 160 and 6231: in a 10% cohort, and not


@pytest.fixture
def two(registry_dir: Path, tiny_int8: Path, tmp_path: Path) -> Registry:
    """`tiny-1` behind `production` (schema 1) and `tiny-2` published beside it."""
    registry = Registry.from_uri(registry_dir, cache_dir=tmp_path / "cache")
    registry.publish(tiny_int8, version="tiny-2", **tiny_fields())
    return registry


def old_reader() -> ModuleType:
    """Today's released reader (schema 1 only), pinned as a fixture file."""
    name = "wastesort_manifest_v1_rollout"
    spec = importlib.util.spec_from_file_location(name, PINNED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- cohorts ---------------------------------------------------------------------------------


def test_buckets_are_pinned_so_a_device_keeps_its_cohort_across_releases():
    assert (bucket(IN), bucket(OUT)) == (160, 6231)
    assert [bucket(i) for i in IDS[:50]] == [bucket(i) for i in IDS[:50]]


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_cohort_is_within_two_points_of_the_percentage(percent: float):
    share = 100 * sum(in_cohort(i, percent) for i in IDS) / len(IDS)
    assert abs(share - percent) <= 2


def test_widening_only_adds_devices():
    ten = {i for i in IDS if in_cohort(i, 10)}
    fifty = {i for i in IDS if in_cohort(i, 50)}
    assert ten < fifty
    assert not any(in_cohort(i, 0) for i in IDS[:500])
    assert all(in_cohort(i, 100) for i in IDS[:500])


# --- promote, resolve, complete, roll back ---------------------------------------------------


def test_first_rollout_on_a_schema_1_registry_is_refused_with_the_reason(two: Registry):
    with pytest.raises(RegistryError, match="upgrade the fleet's software first") as info:
        two.promote("production", "tiny-2", rollout=10)
    assert info.value.code == "rollout_refused"
    assert two.manifest().schema_version == 1
    assert two.resolve("production", IN).version == "tiny-1"  # nothing moved


def test_rollout_gives_the_cohort_the_new_version_and_everyone_else_the_stable_one(
    two: Registry,
):
    manifest = two.promote("production", "tiny-2", rollout=10, force=True, by="ops")
    state = manifest.aliases["production"]
    assert (state.version, state.rollout.stable_version, state.rollout.percent) == (
        "tiny-2",
        "tiny-1",
        10,
    )
    assert manifest.schema_version == 2
    assert two.resolve("production", IN).version == "tiny-2"
    assert two.resolve("production", OUT).version == "tiny-1"
    assert two.resolve("production").version == "tiny-1"  # API, CLI, hook: no device id
    assert two.resolve("tiny-2").version == "tiny-2"  # a version id is still exact
    event = two.history("production")[-1][1]
    assert (event.by, event.from_version, event.to_version) == ("ops", "tiny-1", "tiny-2")
    assert event.reason == "rollout 10% (stable tiny-1)"


def test_explicit_cohort_members_get_the_new_version_whatever_their_hash(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True, pilots=[OUT, OUT])
    assert two.resolve("production", OUT).version == "tiny-2"
    assert two.resolve("production").version == "tiny-1"  # still no device id: the stable one
    assert two.history("production")[-1][1].reason == f"rollout 10% (stable tiny-1), pilots {OUT}"
    two.promote("production", "tiny-2", rollout=20, pilots=["bin-pilot", OUT])  # widening adds
    rollout = two.manifest().aliases["production"].rollout
    assert rollout is not None and rollout.cohorts == [OUT, "bin-pilot"]
    assert "2 pilot device(s)" in describe(rollout)
    with pytest.raises(RegistryError, match="pilot devices go with a rollout"):
        two.promote("production", "tiny-2", pilots=["bin-pilot"])


def test_cli_pilot_devices(two: Registry, registry_dir: Path):
    reg = ("registry", "--registry", str(registry_dir))
    alone = cli(*reg, "promote", "production", "tiny-2", "--pilot", OUT)
    assert alone.returncode == 2 and "pilot devices go with a rollout" in alone.stderr
    started = cli(*reg, "promote", "production", "tiny-2", "--rollout", "10", "--force",
                  "--pilot", OUT, "--pilot", "bin-c")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "10% of devices and 2 pilot device(s) since" in started.stdout
    assert two.resolve("production", OUT).version == "tiny-2"


def test_widen_then_complete_clears_the_rollout_and_goes_back_to_schema_1(
    two: Registry, registry_dir: Path
):
    two.promote("production", "tiny-2", rollout=10, force=True)
    late = next(i for i in IDS if in_cohort(i, 50) and not in_cohort(i, 10))
    assert two.resolve("production", late).version == "tiny-1"
    two.promote("production", "tiny-2", rollout=50)
    assert two.resolve("production", late).version == "tiny-2"
    manifest = two.promote("production", "tiny-2", rollout=100)
    assert manifest.aliases["production"].rollout is None
    assert two.resolve("production").version == "tiny-2"
    assert json.loads((registry_dir / "manifest.json").read_bytes())["schema_version"] == 1
    reasons = [e.reason for _, e in two.history("production")[-3:]]
    assert reasons[1] == "rollout 10% -> 50%"
    assert reasons[2].startswith("rollout complete (was 50% of devices")
    old_reader().Manifest.parse((registry_dir / "manifest.json").read_bytes())  # readable again


def test_a_plain_promote_of_the_same_version_completes_and_of_another_is_refused(
    two: Registry, tiny_int8: Path
):
    two.publish(tiny_int8, version="tiny-3", **tiny_fields())
    two.promote("production", "tiny-2", rollout=10, force=True)
    with pytest.raises(RegistryError, match="rollout of tiny-2 is in progress"):
        two.promote("production", "tiny-3")
    with pytest.raises(RegistryError, match="rollout of tiny-2 is in progress"):
        two.promote("production", "tiny-3", rollout=20)
    two.promote("production", "tiny-2")
    assert two.manifest().aliases["production"].rollout is None
    assert two.resolve("production").version == "tiny-2"
    with pytest.raises(RegistryError, match="already serves tiny-2"):
        two.promote("production", "tiny-2", rollout=10)


def test_rollback_during_a_rollout_puts_everyone_on_stable_and_says_why(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    assert two.rollback("production", reason="bins jam", by="ops") == "tiny-1"
    state = two.manifest().aliases["production"]
    assert (state.version, state.rollout) == ("tiny-1", None)
    assert two.resolve("production", IN).version == "tiny-1"
    event = two.history("production")[-1][1]
    assert event.action == "rollback"
    assert event.reason == "ended the rollout of tiny-2; bins jam"


def test_a_bad_percentage_is_refused(two: Registry):
    for bad in (0, -5, 101):
        with pytest.raises(RegistryError, match="more than 0 and at most 100"):
            two.promote("production", "tiny-2", rollout=bad, force=True)


def test_todays_reader_refuses_a_rollout_manifest_clearly(two: Registry, registry_dir: Path):
    two.promote("production", "tiny-2", rollout=10, force=True)
    old = old_reader()
    raw = (registry_dir / "manifest.json").read_bytes()
    with pytest.raises(old.UnsupportedSchemaError) as info:
        old.Manifest.parse(raw)
    message = str(info.value)
    assert "schema_version 2 is not supported" in message and "upgrade wastesort" in message


# --- the abort check -------------------------------------------------------------------------


def beat(
    device: str, version: str, *, errors_since: float | None = None, **extra: Any
) -> dict[str, Any]:
    """A heartbeat as `edge.health.Health.snapshot` writes it (the fields the check reads)."""
    return {
        "device_id": device,
        "at": time.time(),
        "model": {"alias": "production", "version": version, "serving": version},
        "decisions": 40,
        "last_error": "actuator timed out" if errors_since else None,
        "last_error_at": errors_since,
        **extra,
    }


def fleet(registry: Registry, cohort_errors: bool = False, n: int = 300) -> dict[str, Any]:
    """`n` devices following production, each on the version it resolves."""
    beats = {}
    for i in range(n):
        device = f"bin-{i:03d}"
        version = registry.resolve("production", device).version
        failing = cohort_errors and version == "tiny-2"
        beats[device] = beat(device, version, errors_since=time.time() if failing else None)
    return beats


def write(folder: Path, beats: dict[str, Any]) -> Path:
    for device, body in beats.items():
        (folder / device).mkdir(parents=True, exist_ok=True)
        (folder / device / "heartbeat.json").write_text(json.dumps(body))
    return folder


def test_no_rollout_means_nothing_to_check(two: Registry):
    verdict = run_check(two, fleet(two))
    assert verdict.action == "none" and not verdict.rolled_back


def test_too_few_cohort_heartbeats_is_not_enough_data_and_no_action(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    beats = fleet(two, cohort_errors=True, n=12)  # about one cohort device
    verdict = run_check(two, beats)
    assert verdict.action == "not_enough_data"
    assert verdict.reasons[0].startswith("not enough data")
    assert two.manifest().aliases["production"].rollout is not None


def test_a_healthy_cohort_passes(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    verdict = run_check(two, fleet(two))
    assert verdict.action == "ok", verdict.reasons
    assert verdict.cohort["n"] >= 3 and verdict.rest["n"] > verdict.cohort["n"]


def test_a_cohort_with_errors_is_rolled_back_with_the_reason_recorded(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    verdict = run_check(two, fleet(two, cohort_errors=True))
    assert verdict.action == "abort" and verdict.rolled_back
    assert "share of devices with errors 1.00 vs 0.00" in verdict.reasons[0]
    assert two.resolve("production", IN).version == "tiny-1"
    event = two.history("production")[-1][1]
    assert (event.action, event.by) == ("rollback", "rollout-check")
    assert "rollout aborted by rollout-check: share of devices with errors" in event.reason


def test_errors_from_before_the_rollout_do_not_count(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    beats = fleet(two)
    for device, body in beats.items():
        if body["model"]["serving"] == "tiny-2":
            beats[device] = beat(device, "tiny-2", errors_since=time.time() - 86_400)
    assert run_check(two, beats).action == "ok"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"uncertain_share": 0.4}, "uncertain share 0.40 vs 0.05"),
        ({"drift": {"verdict": "drift"}}, "share of devices with a drift verdict 1.00 vs 0.00"),
    ],
)
def test_uncertain_share_and_drift_verdicts_compare_too(
    two: Registry, extra: dict[str, Any], reason: str
):
    two.promote("production", "tiny-2", rollout=10, force=True)
    beats = {}
    for device, body in fleet(two).items():
        new = body["model"]["serving"] == "tiny-2"
        beats[device] = {**body, "uncertain_share": 0.05, **(extra if new else {})}
    verdict = evaluate(two.manifest(), beats)
    assert verdict.action == "abort" and len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith(reason)


def test_one_cohort_device_refusing_the_new_version_aborts_at_once(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    refusal = {"tiny-2": {"reason": "golden image 0", "code": "self_test_failed", "final": True}}
    beats = {IN: beat(IN, "tiny-1")}
    beats[IN]["model"]["refusals"] = refusal
    verdict = run_check(two, beats, thresholds=Thresholds(min_devices=50))
    assert verdict.action == "abort" and verdict.rolled_back
    assert verdict.cohort["self_test_failed"] == [IN]


def test_a_rollout_completed_meanwhile_is_not_rolled_back(two: Registry, monkeypatch):
    two.promote("production", "tiny-2", rollout=10, force=True)
    beats = fleet(two, cohort_errors=True)
    stale_manifest = two.manifest()
    two.promote("production", "tiny-2", rollout=100)  # someone completes it meanwhile
    monkeypatch.setattr(two, "manifest", lambda: stale_manifest)
    verdict = run_check(two, beats)
    assert verdict.action == "abort" and not verdict.rolled_back
    assert "no longer in progress" in verdict.reasons[-1]
    monkeypatch.undo()
    assert two.resolve("production").version == "tiny-2"


def test_devices_on_other_aliases_and_stale_beats_are_left_out(two: Registry):
    two.promote("production", "tiny-2", rollout=10, force=True)
    beats = fleet(two, cohort_errors=True)
    for body in beats.values():
        if body["model"]["serving"] == "tiny-2":
            body["at"] = time.time() - 7200
    verdict = evaluate(two.manifest(), beats)
    assert verdict.action == "not_enough_data"
    for body in beats.values():
        body["at"], body["model"]["alias"] = time.time(), "canary"
    assert evaluate(two.manifest(), beats).rest["n"] == 0


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_rollout_story(two: Registry, registry_dir: Path, tmp_path: Path):
    reg = ("registry", "--registry", str(registry_dir))
    refused = cli(*reg, "promote", "production", "tiny-2", "--rollout", "10")
    assert refused.returncode == 2
    assert SCHEMA_EXPLANATION.split(":")[0] in refused.stderr
    started = cli(*reg, "promote", "production", "tiny-2", "--rollout", "10", "--force")
    assert started.returncode == 0, started.stderr
    assert "production -> tiny-2 (rollout: 10% of devices since" in started.stdout
    listed = json.loads(cli(*reg, "--json", "list").stdout)
    assert {r["version"]: r["aliases"] for r in listed} == {
        "tiny-1": ["production"],
        "tiny-2": ["production@10%"],
    }
    shown = cli(*reg, "show", "production")
    assert json.loads(shown.stdout)["version"] == "tiny-1"  # no device id: the stable one
    assert "production: tiny-2 (rollout: 10% of devices" in shown.stderr

    telemetry = write(tmp_path / "telemetry", fleet(two, cohort_errors=True))
    checked = cli(*reg, "rollout-check", "--telemetry", str(telemetry), "--json")
    assert checked.returncode == 1, checked.stderr  # aborted
    verdict = json.loads(checked.stdout)
    assert (verdict["action"], verdict["rolled_back"]) == ("abort", True)
    again = cli(*reg, "rollout-check", "--telemetry", str(telemetry))
    assert again.returncode == 0 and "no rollout in progress" in again.stdout
    history = json.loads(cli(*reg, "--json", "history", "production").stdout)
    assert history[-1]["action"] == "rollback"
    assert history[-1]["reason"].startswith("ended the rollout of tiny-2; rollout aborted")


def test_cli_rollout_check_usage_errors_are_one_line(registry_dir: Path, tmp_path: Path):
    reg = ("registry", "--registry", str(registry_dir))
    for args, message in [
        ((), "needs --telemetry"),
        (("--telemetry", str(tmp_path / "nope")), "cannot read heartbeats"),
    ]:
        result = cli(*reg, "rollout-check", *args, env={**os.environ, "WASTESORT_TELEMETRY": ""})
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr
    bad = cli(*reg, "promote", "production", "tiny-1", "--rollout", "150")
    assert bad.returncode == 2 and "at most 100 percent" in bad.stderr
