"""The scheduled drift and fleet watch on moto S3: real records from the tiny model (with a
reference file), the handler run as Lambda runs it, and its EMF lines parsed from stdout."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from functions.api import metric_names as m
from functions.drift import watch
from functions.drift.settings import (
    ENV_RECORDS_URI,
    ENV_REGISTRY_URI,
    ENV_TELEMETRY_URI,
    ENV_WINDOW_HOURS,
    Settings,
    SettingsError,
)
from tests.conftest import LABELS, ROOT, SAMPLES, moto_bucket, tiny_fields
from wastesort import Classifier, reference
from wastesort.manifest import Alias, Manifest, OutputSpec, Rollout
from wastesort.records import dumps, make_record, new_batch_id, read_records, record_key
from wastesort.registry import Registry
from wastesort.registry.local import LocalStore

NOW = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
PHOTOS = sorted(SAMPLES.rglob("*.jpg"))
REGISTRY, CAPTURES, TELEMETRY = "drift-registry", "drift-captures", "drift-telemetry"


def _shifted(data: bytes) -> bytes:
    """A dim, blue-cast copy of a photo: a dirty lens at dusk."""
    image = ImageEnhance.Brightness(Image.open(io.BytesIO(data)).convert("RGB")).enhance(0.35)
    r, g, b = image.split()
    image = Image.merge("RGB", (r.point(lambda v: v * 0.6), g, b.point(lambda v: min(255, v + 60))))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def local_registry(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-2 (`production`), tiny-3 and tiny-5 with the sample photos' reference; tiny-4 with
    no reference file."""
    tmp = tmp_path_factory.mktemp("drift-registry")
    model = tiny_models / "named" / "tiny_int8.tflite"
    clf = Classifier.load(model, labels=LABELS)
    arrays = np.stack([clf.preprocess(p.read_bytes()) for p in PHOTOS])
    outputs = clf.outputs_from_arrays(arrays, ("logits", "embedding"))
    ref = reference.build(
        outputs["embedding"],
        clf.scores_from_arrays(arrays),
        np.array([LABELS.index(p.parent.name) for p in PHOTOS]),
        reference.image_stats_batch(arrays),
        LABELS,
    )
    (tmp / "reference.npz").write_bytes(ref.dumps())
    registry = Registry.from_uri(tmp / "reg", cache_dir=tmp / "cache")
    named = {"logits": tiny_fields()["output"], "embedding": OutputSpec(kind="embedding")}
    for version, aliases in (("tiny-2", ["production"]), ("tiny-3", ["candidate"]), ("tiny-5", [])):
        registry.publish(
            model,
            version=version,
            aliases=aliases,
            reference=tmp / "reference.npz",
            outputs=named,
            **tiny_fields(),
        )
    registry.publish(model, version="tiny-4", **tiny_fields())
    return tmp / "reg"


@pytest.fixture(scope="module")
def predictions(local_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real predictions (with embedding and image statistics) of the photos and of their
    shifted copies."""
    clf = Classifier.load(
        f"{local_registry}@tiny-2", cache_dir=tmp_path_factory.mktemp("drift-cache")
    )
    plain = clf.predict_batch([p.read_bytes() for p in PHOTOS])
    shifted = clf.predict_batch([_shifted(p.read_bytes()) for p in PHOTOS])
    assert plain[0].embedding is not None and plain[0].image_stats is not None
    return {"plain": plain, "shifted": shifted}


def _records(preds: list, version: str, source: str, at: datetime) -> list[dict[str, Any]]:
    device = None if source == "api" else source
    out = []
    for p in preds:
        record = make_record(p, source=source, at=at, device=device)
        record["model_version"] = version
        out.append(record)
    return out


@dataclass
class Run:
    summary: dict[str, Any]
    emf: list[dict[str, Any]]

    def values(self, **dimensions: str) -> dict[str, float]:
        """Every metric published under exactly these dimensions (besides `service`)."""
        found: dict[str, float] = {}
        wanted = {**dimensions, m.DIM_SERVICE: m.DRIFT_SERVICE_NAME}
        for blob in self.emf:
            directive = blob["_aws"]["CloudWatchMetrics"][0]
            assert directive["Namespace"] == m.METRICS_NAMESPACE
            names = set(directive["Dimensions"][0])
            if names != set(wanted) or any(blob[k] != v for k, v in wanted.items()):
                continue
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                found[metric["Name"]] = value[0] if isinstance(value, list) else value
        return found


class _Context:
    function_name = "wastesort-test-drift"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:wastesort-test-drift"
    aws_request_id = "req-1"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def _upload_folder(client: Any, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder)}", Body=path.read_bytes()
        )


def _put_records(client: Any, records: list[dict[str, Any]]) -> None:
    source, at = (
        records[0]["source"],
        datetime.fromisoformat(records[0]["at"].replace("Z", "+00:00")),
    )
    key = record_key(source, at, new_batch_id(at))
    client.put_object(Bucket=CAPTURES, Key=key, Body=dumps(records))


def _heartbeat(client: Any, device: str, version: str, age_s: float) -> None:
    beat = {"at": NOW.timestamp() - age_s, "model": {"serving": version}, "telemetry": {"depth": 0}}
    client.put_object(
        Bucket=TELEMETRY, Key=f"telemetry/{device}/heartbeat.json", Body=json.dumps(beat).encode()
    )


@pytest.fixture(scope="module")
def run(local_registry: Path, predictions: dict, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The handler over: tiny-2 from the API and bin-1 (the photos: `ok`), bin-3 (5 photos:
    too few), tiny-3 from bin-2 (the shifted photos: `drift`), tiny-5 (5 records: too few),
    tiny-4 (no reference), `ghost` (not in the manifest), and shifted tiny-2 records from
    before the window (ignored); heartbeats of bin-1, bin-2 (stale) and bin-3."""
    plain, shifted = predictions["plain"], predictions["shifted"]
    recent = NOW - timedelta(minutes=30)
    with pytest.MonkeyPatch.context() as mp, moto_bucket(REGISTRY) as client:
        mp.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        mp.setenv("WASTESORT_CACHE_DIR", str(tmp_path_factory.mktemp("lambda-tmp")))
        for bucket in (CAPTURES, TELEMETRY):
            client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
        _upload_folder(client, local_registry, REGISTRY, "registry")
        _put_records(client, _records(plain, "tiny-2", "api", recent))
        _put_records(client, _records(plain, "tiny-2", "bin-1", recent - timedelta(hours=2)))
        _put_records(client, _records(plain[:5], "tiny-2", "bin-3", recent))
        _put_records(client, _records(shifted, "tiny-3", "bin-2", recent))
        _put_records(client, _records(plain[:5], "tiny-5", "api", recent))
        _put_records(client, _records(plain, "tiny-4", "api", recent))
        _put_records(client, _records(plain[:3], "ghost", "api", recent))
        _put_records(client, _records(shifted, "tiny-2", "api", NOW - timedelta(hours=30)))
        _heartbeat(client, "bin-1", "tiny-2", 60)
        _heartbeat(client, "bin-2", "tiny-3", 2 * 3600)
        _heartbeat(client, "bin-3", "tiny-2", 120)
        mp.setenv(ENV_REGISTRY_URI, f"s3://{REGISTRY}/registry")
        mp.setenv(ENV_RECORDS_URI, f"s3://{CAPTURES}")
        mp.setenv(ENV_TELEMETRY_URI, f"s3://{TELEMETRY}/telemetry")
        mp.setenv(ENV_WINDOW_HOURS, "6")
        from functions.drift import handler as module  # reads the environment at call time

        out = io.StringIO()
        mp.setattr("sys.stdout", out)
        summary = module.handler({"time": NOW.isoformat().replace("+00:00", "Z")}, _Context())
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return Run(summary, [line for line in lines if "_aws" in line])


def test_the_photos_the_version_saw_are_ok(run: Run) -> None:
    assert run.summary["versions"]["tiny-2"]["verdict"] == "ok"
    assert run.summary["versions"]["tiny-2"]["records"] == 2 * len(PHOTOS) + 5  # not the old ones
    by_version = run.values(**{m.DIM_MODEL_VERSION: "tiny-2"})
    assert by_version[m.METRIC_DRIFT_VERDICT] == 0
    assert by_version[m.METRIC_DRIFT_RECORDS] == 2 * len(PHOTOS) + 5
    assert 0 < by_version[m.METRIC_EXPECTED_ACCURACY] <= 1
    assert by_version[m.METRIC_DRIFT_SCORE] < 3
    # the alarm's metric: the version `production` names today
    assert run.values(**{m.DIM_ALIAS: "production"})[m.METRIC_DRIFT_VERDICT] == 0


def test_shifted_photos_are_drift_for_the_version_and_the_device(run: Run) -> None:
    assert run.summary["versions"]["tiny-3"]["verdict"] == "drift"
    assert run.values(**{m.DIM_MODEL_VERSION: "tiny-3"})[m.METRIC_DRIFT_VERDICT] == 2
    assert run.values(**{m.DIM_MODEL_VERSION: "tiny-3"})[m.METRIC_DRIFT_SCORE] >= 3
    assert run.values(**{m.DIM_ALIAS: "candidate"})[m.METRIC_DRIFT_VERDICT] == 2
    bin2 = run.values(**{m.DIM_DEVICE: "bin-2"})
    assert bin2[m.METRIC_DEVICE_DRIFT_VERDICT] == 2
    assert 0 <= bin2[m.METRIC_DEVICE_UNCERTAIN_SHARE] <= 1
    assert run.values(**{m.DIM_DEVICE: "bin-1"})[m.METRIC_DEVICE_DRIFT_VERDICT] == 0
    # the log line lists the bins that are not ok, and counts them all
    assert set(run.summary["devices"]) == {"bin-2", "bin-3"}
    assert run.summary["device_verdicts"] == {"ok": 1, "drift": 1, "insufficient": 1}


def test_a_small_window_is_not_enough_data_and_no_verdict(run: Run) -> None:
    for dims in ({m.DIM_MODEL_VERSION: "tiny-5"}, {m.DIM_DEVICE: "bin-3"}):
        values = run.values(**dims)
        assert values[m.METRIC_NOT_ENOUGH_DATA] == 1
        assert values[m.METRIC_DRIFT_RECORDS] == 5
        assert not {
            m.METRIC_DRIFT_VERDICT,
            m.METRIC_DEVICE_DRIFT_VERDICT,
            m.METRIC_DRIFT_SCORE,
        } & set(values)
    assert run.summary["versions"]["tiny-5"]["verdict"] == "insufficient"


def test_a_version_without_reference_is_skipped_and_an_unknown_one_counted(run: Run) -> None:
    assert run.summary["versions"]["tiny-4"]["verdict"] == "skipped"
    assert m.METRIC_DRIFT_VERDICT not in run.values(**{m.DIM_MODEL_VERSION: "tiny-4"})
    assert run.summary["versions"]["ghost"]["verdict"] == "error"
    assert "ghost" in run.summary["versions"]["ghost"]["reason"]
    assert run.summary["errors"] == 1
    assert run.values()[m.METRIC_DRIFT_ERRORS] == 1


def test_heartbeats_give_the_stale_count_and_devices_by_version(run: Run) -> None:
    fleet = run.values()
    assert fleet[m.METRIC_DEVICES] == 3
    assert fleet[m.METRIC_STALE_DEVICES] == 1
    assert fleet[m.METRIC_DEVICES_BEHIND] == 1  # bin-2 serves tiny-3, production is tiny-2
    assert run.values(**{m.DIM_MODEL_VERSION: "tiny-2"})[m.METRIC_DEVICES_BY_VERSION] == 2
    assert run.values(**{m.DIM_MODEL_VERSION: "tiny-3"})[m.METRIC_DEVICES_BY_VERSION] == 1
    assert run.summary["fleet"]["stale"] == ["bin-2"]


def test_settings_refuse_bad_values_by_name() -> None:
    with pytest.raises(SettingsError, match=ENV_REGISTRY_URI):
        Settings.from_env({})
    with pytest.raises(SettingsError, match=ENV_WINDOW_HOURS):
        Settings.from_env({ENV_REGISTRY_URI: "s3://b/r", ENV_WINDOW_HOURS: "soon"})
    settings = Settings.from_env(
        {ENV_REGISTRY_URI: "s3://b/r", "DRIFT_THRESHOLDS": '{"min_window": 30}'}
    )
    assert settings.thresholds == {"min_window": 30} and settings.records_uri is None


def test_the_handler_imports_no_pillow_runtime_or_web_framework() -> None:
    """`wastesort/__init__` is lazy: the drift path pays for numpy and pydantic only."""
    code = (
        "import sys, functions.drift.handler; "
        "print(sorted(m for m in ('PIL', 'fastapi', 'starlette', 'ai_edge_litert', "
        "'tflite_runtime', 'tensorflow', 'scipy', 'wastesort.classifier') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- a run short of time, the devices' turn, a staged rollout ------------------------------------


def _stores(tmp: Path, preds: list, devices: list[str]) -> tuple[LocalStore, LocalStore]:
    """Records of `devices` (5 each, tiny-2) and a fresh heartbeat per device, in folders."""
    records, telemetry = LocalStore(tmp / "captures"), LocalStore(tmp / "telemetry")
    for device in devices:
        at = NOW - timedelta(minutes=30)
        rows = _records(preds[:5], "tiny-2", device, at)
        assert records.put_new(record_key(device, at, new_batch_id(at)), dumps(rows))
        beat = {"at": NOW.timestamp() - 60, "model": {"serving": "tiny-2"}}
        assert telemetry.put_new(f"{device}/heartbeat.json", json.dumps(beat).encode())
    return records, telemetry


def test_short_of_time_the_fleet_is_still_watched_and_the_window_marked_partial(
    local_registry: Path, predictions: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records, telemetry = _stores(tmp_path, predictions["plain"], ["bin-1", "bin-2"])
    registry = Registry.from_uri(local_registry, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        out = watch.run(
            records=records, registry=registry, telemetry=telemetry, now=NOW,
            time_left_s=lambda: 30.0,  # under `min_read_time_left_s`: no object is read
        )  # fmt: skip
    assert out.fleet is not None and len(out.fleet["devices"]) == 2
    assert out.versions == {} and out.devices == {}
    assert "window partial" in caplog.text
    full = watch.run(records=records, registry=registry, telemetry=None, now=NOW)
    assert full.versions["tiny-2"]["records"] == 10


def test_a_run_with_time_for_one_device_judges_another_one_the_next_hour(
    local_registry: Path, predictions: dict, tmp_path: Path
) -> None:
    devices = [f"bin-{i}" for i in range(6)]
    records, _ = _stores(tmp_path, predictions["plain"], devices)
    registry = Registry.from_uri(local_registry, cache_dir=tmp_path / "cache")
    config = watch.WatchConfig()
    judged = []
    for now in (NOW, NOW + timedelta(hours=1)):
        groups = watch.group(
            read_records(records, since=now - timedelta(hours=6), until=now), size=100, seed=0
        )
        budget = iter([100.0])  # time for the first device, none after it
        out = watch.Outcome()
        watch.judge_devices(
            groups, watch.Baselines(registry), config, out,
            lambda budget=budget: next(budget, 0.0), now=now,
        )  # fmt: skip
        assert len(out.devices) == 1
        judged.append(next(iter(out.devices)))
    assert judged[0] != judged[1]


def test_a_rollout_cohort_on_the_new_version_is_not_behind(tmp_path: Path) -> None:
    telemetry = LocalStore(tmp_path)
    for device, version in (("bin-1", "tiny-2"), ("bin-2", "tiny-3"), ("bin-3", "tiny-3")):
        beat = {"at": NOW.timestamp(), "model": {"serving": version}}
        assert telemetry.put_new(f"{device}/heartbeat.json", json.dumps(beat).encode())
    rollout = Rollout(stable_version="tiny-2", cohorts=["bin-2"])
    manifest = Manifest(
        schema_version=2, aliases={"production": Alias(version="tiny-3", rollout=rollout)}
    )
    out = watch.Outcome()
    watch.fleet_watch(telemetry, SimpleNamespace(manifest=manifest), NOW, watch.WatchConfig(), out)
    assert out.fleet is not None
    assert out.fleet["behind"] == ["bin-3"]  # bin-2 is in the cohort; bin-3 is not
