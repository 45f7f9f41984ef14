"""A staged rollout seen from AWS: the API and the pre-traffic hook resolve without a device id,
so they keep the stable version until the rollout completes; the scheduled rollout check, on
moto S3, rolls a worse cohort back and says so in EMF."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.hooks.pre_traffic import load_golden
from functions.rollout import names as n
from tests.conftest import moto_bucket, sample_bytes, tiny_fields
from wastesort.registry import GoldenSample, Registry
from wastesort.registry.rollout import in_cohort

BUCKET, TELEMETRY = "rollout-registry", "rollout-telemetry"
URI = f"s3://{BUCKET}/registry"


class _Context:
    function_name = "rollout-check"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:rollout-check"
    aws_request_id = "req-1"


@pytest.fixture
def s3(tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An S3 registry: tiny-1 on `production`, tiny-2 rolled out to 10% of devices."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with moto_bucket(BUCKET) as client:
        registry = Registry.from_uri(URI, cache_dir=tmp_path / "cache")
        golden = [GoldenSample("glass.jpg", sample_bytes("glass"), "glass")]
        registry.publish(tiny_int8, version="tiny-1", golden=golden, aliases=["production"],
                         **tiny_fields())  # fmt: skip
        registry.publish(tiny_int8, version="tiny-2", golden=golden, **tiny_fields())
        registry.promote("production", "tiny-2", rollout=10, force=True)
        yield client


def test_the_hook_checks_the_stable_version_during_a_rollout(s3: Any):
    entry, cases = load_golden(s3, f"{URI}@production")
    assert entry.version == "tiny-1" and len(cases) == 1


def test_the_api_serves_the_stable_version_during_a_rollout(s3: Any, make_client: Any):
    client = make_client(None, model_uri=f"{URI}@production")
    answer = client.get("/model/info")
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "tiny-1"


def _beats(client: Any, registry: Registry, *, failing_cohort: bool) -> None:
    client.create_bucket(
        Bucket=TELEMETRY, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    for i in range(200):
        device = f"bin-{i:03d}"
        version = registry.resolve("production", device).version
        failing = failing_cohort and in_cohort(device, 10)
        beat = {
            "device_id": device,
            "at": time.time(),
            "model": {"alias": "production", "version": version, "serving": version},
            "last_error": "servo stalled" if failing else None,
            "last_error_at": time.time() if failing else None,
        }
        key = f"telemetry/{device}/heartbeat.json"
        client.put_object(Bucket=TELEMETRY, Key=key, Body=json.dumps(beat).encode())


def _run(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    monkeypatch.setenv(n.ENV_REGISTRY_URI, URI)
    monkeypatch.setenv(n.ENV_TELEMETRY_URI, f"s3://{TELEMETRY}/telemetry")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Wastesort")
    from functions.rollout import handler as module

    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    result = module.handler({"source": "aws.events"}, _Context())
    monkeypatch.undo()
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return result, [line for line in lines if "_aws" in line]


@pytest.mark.parametrize("failing", [True, False])
def test_the_scheduled_check_rolls_a_worse_cohort_back(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: bool
):
    registry = Registry.from_uri(URI, cache_dir=tmp_path / "c2")
    _beats(s3, registry, failing_cohort=failing)
    result, emf = _run(monkeypatch)
    assert result["action"] == ("abort" if failing else "ok")
    assert result["rolled_back"] is failing
    (metric,) = emf
    assert metric[n.DIM_ALIAS] == "production"
    assert metric[n.METRIC_ABORTED] == [int(failing)]
    assert metric[n.METRIC_COHORT] == [result["cohort"]["n"]]
    assert result["cohort"]["n"] >= 3 and len(result["rest"]["devices"]) == 20
    after = Registry.from_uri(URI, cache_dir=tmp_path / "c3").manifest().aliases["production"]
    assert (after.rollout is None) is failing
    if failing:
        assert after.history[-1].by == n.SERVICE_NAME
        assert "rollout aborted by rollout-check" in (after.history[-1].reason or "")


def test_a_misconfigured_check_says_what_is_missing(monkeypatch: pytest.MonkeyPatch):
    from functions.rollout.handler import SettingsError, check

    with pytest.raises(SettingsError, match=n.ENV_TELEMETRY_URI):
        check({n.ENV_REGISTRY_URI: URI})
    with pytest.raises(SettingsError, match="bad rollout threshold"):
        check({n.ENV_REGISTRY_URI: URI, n.ENV_TELEMETRY_URI: URI, n.ENV_MIN_DEVICES: "x"})
