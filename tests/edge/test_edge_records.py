"""Prediction records at the bin (issue 37 §0-1): every decision's frame rides the telemetry
file to `records/<device>/` through the uploader, and the heartbeat carries the bin's rolling
drift verdict and its `uncertain` share."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from edge.decide import Decision
from edge.records import EdgeRecords
from edge.telemetry import S3Sink
from edge.telemetry.records import RecordQueue
from edge.wiring import build_runner
from tests.conftest import moto_bucket
from tests.core.test_reference import ALL_SAMPLES, referenced_registry  # noqa: F401 (a fixture)
from tests.edge.test_edge_runner import edge_config
from wastesort import fleet
from wastesort.cli import main
from wastesort.record_sources import read_queue_file
from wastesort.records import read_records
from wastesort.registry import Registry
from wastesort.registry.s3 import S3Store

BUCKET = "wastesort-records-edge-test"
DEVICE = "bin-7"


def _config(tmp_path: Path, registry_root: Path, **extra: object):
    return edge_config(
        tmp_path,
        Registry.from_uri(registry_root),
        actuators=[],
        model={"registry": str(registry_root), "num_threads": 1, "self_test": False},
        **extra,
    )


def _record(i: int, at: datetime) -> dict:
    return {"at": at.isoformat().replace("+00:00", "Z"), "all_confidences": {"a": 1.0}, "i": i}


def test_records_reach_records_device_through_the_uploader(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
):
    config = _config(tmp_path, referenced_registry, records={"upload_to": f"s3://{BUCKET}"})
    with moto_bucket(BUCKET) as client:
        sink = S3Sink(f"s3://{BUCKET}", client=client, captures=True)
        runner = build_runner(config, once=True, record_sink=sink)
        assert runner.classifier is not None and runner.classifier.reference is not None
        runner.run()  # shutdown flushes the uploader
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert keys and all(k.startswith(f"records/{DEVICE}/") for k in keys)
        assert all(k.endswith(".jsonl") and k.count("/") == 6 for k in keys)
        store = S3Store(f"s3://{BUCKET}", client=client)
        since = datetime.now(UTC) - timedelta(hours=1)
        stored = list(read_records(store, since=since, source=DEVICE))
    assert len(stored) == runner.stats.decisions == len(ALL_SAMPLES)
    first = stored[0]
    assert first["device"] == DEVICE and first["source"] == DEVICE
    assert first["model_version"] == "tiny-2" and len(first["all_confidences"]) == 6
    assert first["embedding"] and set(first["image_stats"]) >= {"brightness", "blur"}
    # uploaded, and the most recent are kept for the heartbeat and the CLI
    kept = read_queue_file(tmp_path / "state" / "telemetry.sqlite")
    assert [r["at"] for r in kept] == [r["at"] for r in stored]
    status = json.loads((tmp_path / "state" / "health.json").read_text())["records"]
    assert status["depth"] == 0 and status["uploaded"] == len(ALL_SAMPLES)


def test_drift_cli_reads_a_bins_queue_file(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
):
    config = _config(tmp_path, referenced_registry)  # nowhere to upload: records stay queued
    build_runner(config, once=True).run()  # the updater installs the version's reference
    queue_file = tmp_path / "state" / "telemetry.sqlite"
    args = ["drift", "--model", str(referenced_registry), "--json", "--current", str(queue_file)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(ALL_SAMPLES) and report["verdict"] == "ok"
    assert report["tests"]["embedding_mmd"]["verdict"] == "ok"


def test_the_heartbeat_carries_a_drift_verdict_and_the_uncertain_share(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
):
    config = _config(tmp_path, referenced_registry, decide={"threshold": 0.18})
    build_runner(config, once=True).run()  # the updater installs the version's reference
    beat = json.loads((tmp_path / "state" / "health.json").read_text())
    verdict = beat["drift"]
    assert (beat["model"]["reference"], beat["model"]["reference_error"]) == (True, None)
    assert verdict["verdict"] in {"ok", "warn", "drift"}  # 18 photos: enough to judge
    assert verdict["n"] == len(ALL_SAMPLES) and verdict["model_version"] == "tiny-2"
    assert verdict["tests"]["embedding_mmd"] != "skipped"
    recent = beat["recent_decisions"]
    assert recent["n"] == len(ALL_SAMPLES) and 0 < recent["uncertain"] < recent["n"]
    assert beat["uncertain_share"] == pytest.approx(recent["uncertain"] / recent["n"], abs=1e-4)
    assert fleet.device_row(DEVICE, beat, beat["at"], 300)["drift"] == verdict["verdict"]
    assert fleet.device_signals(beat)["uncertain_share"] == beat["uncertain_share"]


def test_a_version_without_reference_has_no_verdict_and_a_restart_keeps_the_window(
    tmp_path: Path, edge_registry: Registry
):
    config = edge_config(tmp_path, edge_registry, actuators=[])
    build_runner(config, once=True).run()
    beat = json.loads((tmp_path / "state" / "health.json").read_text())
    assert beat["drift"] is None and beat["recent_decisions"]["n"] == len(ALL_SAMPLES)
    assert beat["model"]["reference"] is None  # the version has none: nothing amiss
    queue = RecordQueue(tmp_path / "state" / "telemetry.sqlite", device_id=DEVICE)
    again = EdgeRecords(config.records, device_id=DEVICE, queue=queue)
    assert len(again._window) == len(ALL_SAMPLES)
    assert "embedding" not in queue.recent(1)[0]  # no reference: no projection
    again.close()


def test_records_can_be_off_and_the_share_is_honoured(tmp_path: Path, edge_registry: Registry):
    config = edge_config(tmp_path, edge_registry, actuators=[], records={"sample": 0})
    build_runner(config, once=True).run()
    beat = json.loads((tmp_path / "state" / "health.json").read_text())
    assert beat["records"]["enabled"] is False and "depth" not in beat["records"]
    assert beat["recent_decisions"]["n"] == len(ALL_SAMPLES)  # the share is still known


def test_the_verdict_is_recomputed_only_every_few_records(
    tmp_path: Path,
    referenced_registry: Path,  # noqa: F811
):
    config = _config(tmp_path, referenced_registry, records={"drift_every": 5})
    runner = build_runner(config, once=True)
    runner.run()
    records = runner.records
    assert records is not None
    first = records.drift(runner.classifier)
    assert records.drift(runner.classifier) is first  # nothing new: the cached verdict
    decision = Decision("glass", 0.9, 1, "tiny-2")
    for _ in range(5):
        records.observe(decision, runner.last_prediction)
    assert records.drift(runner.classifier) is not first


def test_the_record_queue_batches_by_hour_bounds_and_keeps_the_latest(tmp_path: Path):
    path = tmp_path / "telemetry.sqlite"
    queue = RecordQueue(path, device_id=DEVICE, max_pending=4, keep=2)
    t0 = datetime(2026, 5, 1, 9, 59, 58, tzinfo=UTC)
    for i in range(5):
        queue.add(_record(i, t0 + timedelta(seconds=i)))
    assert queue.stats() == {"depth": 4, "recorded": 5, "uploaded": 0, "evicted": 1}
    batch, key, body = queue.claim(10)
    assert key.startswith(f"records/{DEVICE}/2026/05/01/09/")
    assert [json.loads(line)["i"] for line in body.splitlines()] == [1]
    assert queue.claim(10) == (batch, key, body)  # unfinished: the same batch again
    assert queue.complete(batch) == 1
    batch, key, body = queue.claim(10)
    assert "/2026/05/01/10/" in key and len(body.splitlines()) == 3
    queue.complete(batch)
    assert queue.claim(10) is None
    assert [r["i"] for r in read_queue_file(path)] == [3, 4]  # `keep` uploaded ones stay
    queue.close()


def test_a_dotted_device_id_cannot_upload_records(tmp_path: Path):
    with pytest.raises(ConfigError, match="records are uploaded under the device id"):
        load_config(None, device_id="bin.7", records={"upload_to": "s3://b"})
    assert load_config(None, device_id="bin.7").records.enabled  # kept on the bin: fine
