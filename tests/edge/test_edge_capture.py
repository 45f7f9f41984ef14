"""Capture at the bin: photos join the telemetry queue with their decision, survive kill -9,
upload through an outage and a lost answer once each (also when a file is decided again), a
full capture queue evicts the oldest and says so, and the records are the core's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError
from PIL import Image

from edge.capture import QueuedCapture
from edge.config import ConfigError, load_config
from edge.decided import DECIDED_FILE
from edge.telemetry import S3Sink, TelemetryQueue, Uploader, telemetry_status
from edge.wiring import build_runner
from tests.conftest import moto_bucket
from tests.edge.test_edge_decided import (
    FILES,
    decide_what_is_there,
    inbox_with,
    kill_and_restart,
)
from tests.edge.test_edge_runner import edge_config
from wastesort.capture import Capture, CaptureStore, parse_id
from wastesort.registry.s3 import S3Store

BUCKET = "wastesort-captures-test"
DEVICE = "bin-7"


@pytest.fixture
def s3():
    # versioned as in the CDK app: a retried put must not leave a second version
    with moto_bucket(BUCKET, versioned=True) as client:
        yield client


def pending(state: Path) -> list[QueuedCapture]:
    queue = TelemetryQueue(state / "telemetry.sqlite", device_id="x")
    try:
        return queue.pending_captures()
    finally:
        queue.close()


class FlakyCaptureSink:
    """S3 through a bad network: the first puts fail to connect, one put is stored but its
    answer is lost (the device cannot tell it from a failure)."""

    def __init__(self, sink: S3Sink, *, refuse: int, lose_answer_of: int) -> None:
        self.sink, self.uri = sink, sink.uri
        self.refuse, self.lose_answer_of, self.calls = refuse, lose_answer_of, 0

    def put_capture(self, key: str, jpeg: bytes, record: bytes) -> None:
        self.calls += 1
        if self.calls <= self.refuse:
            raise EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com")
        self.sink.put_capture(key, jpeg, record)
        if self.calls == self.lose_answer_of:
            raise ConnectionResetError("connection reset after the upload")


def upload_through_an_outage(state: Path, client) -> Uploader:
    queue = TelemetryQueue(state / "telemetry.sqlite", device_id=DEVICE, max_captures=1000)
    sink = FlakyCaptureSink(
        S3Sink(f"s3://{BUCKET}", client=client, captures=True), refuse=2, lose_answer_of=4
    )
    uploader = Uploader(queue, None, capture_sink=sink, backoff_base_s=1, backoff_max_s=4)
    for attempt in range(20):
        uploader.attempt()
        if attempt == 3:  # a restart in the middle of it all
            queue.close()
            uploader.queue = queue = TelemetryQueue(
                state / "telemetry.sqlite", device_id=DEVICE, max_captures=1000
            )
        if not queue.pending_captures():
            break
    assert uploader.failures == 0
    queue.close()
    return uploader


def stored(client) -> dict[str, int]:
    """Key -> versions, for everything in the bucket."""
    versions: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for version in page.get("Versions", []):
            versions[version["Key"]] = versions.get(version["Key"], 0) + 1
    return versions


def test_a_killed_service_captures_each_photo_once_through_an_outage(tmp_path, edge_registry, s3):
    """SIGKILL once every file is decided, start again, drop one more file; then upload
    through refused connections, a lost answer and a restart: each photo is stored once."""
    inbox = inbox_with(tmp_path)
    state = tmp_path / "state"

    def captured(count: int) -> bool:
        return (state / "telemetry.sqlite").exists() and len(pending(state)) >= count

    kill_and_restart(
        tmp_path,
        edge_registry,
        inbox,
        captured,
        device=DEVICE,
        extra="capture:\n  enabled: true\n  sample: 1.0\n",
    )
    queued = pending(state)
    assert len({c.capture_id for c in queued}) == len(queued) == FILES + 1

    upload_through_an_outage(state, s3)
    versions = stored(s3)
    assert set(versions.values()) == {1}, "a capture was stored twice"
    expected = {f"{c.key}{suffix}" for c in queued for suffix in (".jpg", ".json")}
    assert set(versions) == expected, "a capture was lost (or stored under another key)"
    assert all(key.startswith(f"captures/{DEVICE}/") for key in versions)  # the role's prefix

    captures = CaptureStore(S3Store(f"s3://{BUCKET}", client=s3))
    records = [captures.record(c.capture_id) for c in queued]
    assert {r.source for r in records} == {DEVICE}
    assert {r.reason for r in records} <= {"uncertain", "sampled"}
    for record in records:
        image = captures.image(record.id)
        assert Image.open(io.BytesIO(image)).getexif() == {}  # re-encoded, no metadata
    some = f"{queued[0].key}.jpg"
    assert s3.get_object_tagging(Bucket=BUCKET, Key=some)["TagSet"] == [
        {"Key": "labelled", "Value": "false"}
    ]


def test_a_file_decided_again_is_not_captured_again(tmp_path, edge_registry, s3):
    """The memory lost after the captures were uploaded (a kill between the event and
    `decided.sqlite`): the folder is decided again under the same capture ids, and the
    conditional put leaves what was stored alone."""
    inbox = inbox_with(tmp_path)
    state = tmp_path / "state"
    config = edge_config(
        tmp_path,
        edge_registry,
        actuators=[],
        source={"kind": "folder", "path": inbox, "poll_s": 0.01},
        capture={"enabled": True, "sample": 1.0},  # every file: the test is about repeats
    )
    sink = S3Sink(f"s3://{BUCKET}", client=s3, captures=True)

    def once() -> list[str]:
        runner = build_runner(config, capture_sink=sink)
        try:
            decide_what_is_there(runner)
            assert runner.uploader is not None
            runner.uploader.flush()
            return [c.capture_id for c in runner.queue.pending_captures()]
        finally:
            runner.shutdown()

    assert once() == []  # all uploaded
    first = stored(s3)
    assert first, "nothing was captured"
    (state / DECIDED_FILE).unlink()
    assert once() == []
    assert stored(s3) == first  # the same keys, one version each


def test_a_full_capture_queue_evicts_the_oldest_and_reports_it(tmp_path):
    queue = TelemetryQueue(tmp_path / "q.sqlite", device_id=DEVICE, max_captures=3)
    for n in range(5):
        capture = QueuedCapture(f"id-{n}", f"captures/{DEVICE}/k-{n}", b"jpeg", b"{}")
        queue.record({"decision": "uncertain", "n": n}, capture=capture)
    assert [c.capture_id for c in queue.pending_captures()] == ["id-2", "id-3", "id-4"]
    assert queue.stats()["captures"] == {"depth": 3, "recorded": 5, "uploaded": 0, "evicted": 2}
    assert telemetry_status(queue, None, None, 0)["captures"]["evicted"] == 2  # the heartbeat

    claimed = queue.claim(100)
    assert claimed is not None
    events = [json.loads(line) for line in claimed[2].decode().splitlines()]
    report = [e for e in events if e["kind"] == "capture_evictions"]
    assert [(e["count"], e["evicted_total"]) for e in report] == [(2, 2)]
    assert not [e for e in events if e["kind"] == "evictions"]  # no event was evicted

    row, capture = queue.claim_capture()  # a claimed capture is not evicted mid-upload
    queue.record({"decision": "glass"}, capture=QueuedCapture("id-5", "k", b"j", b"{}"))
    assert capture.capture_id in [c.capture_id for c in queue.pending_captures()]
    assert queue.complete_capture(row) == 1
    assert queue.stats()["captures"] == {"depth": 2, "recorded": 6, "uploaded": 1, "evicted": 3}
    queue.close()


def test_without_capture_the_queue_reports_no_captures(tmp_path):
    queue = TelemetryQueue(tmp_path / "q.sqlite", device_id=DEVICE)
    assert "captures" not in queue.stats()
    queue.close()


def test_capture_is_off_by_default_and_needs_the_queue_and_a_plain_device_id(tmp_path):
    assert load_config(None, state_dir=tmp_path).capture.enabled is False
    with pytest.raises(ConfigError, match="capture needs telemetry"):
        load_config(None, telemetry={"enabled": False}, capture={"enabled": True})
    with pytest.raises(ConfigError, match="no dots"):
        load_config(None, device_id="bin.7", capture={"enabled": True})
    with pytest.raises(ConfigError, match="sample"):
        load_config(None, capture={"enabled": True, "sample": 1.5})


def test_an_s3_capture_store_below_the_root_is_a_warning_at_start(caplog):
    S3Sink("s3://bucket/some/prefix", captures=True)
    assert "captures/<device id>/" in caplog.text


@pytest.mark.parametrize("sample", [0.0, 1.0])
def test_every_uncertain_decision_is_captured_and_the_sample_of_the_rest(
    tmp_path, edge_registry, sample
):
    """What the API writes, a bin writes: the record parses as `Capture`, its id names the
    device, its photo is at most 1024 px a side."""
    config = edge_config(
        tmp_path,
        edge_registry,
        actuators=[],
        decide={"threshold": 0.18},  # the tiny model is unsure: about a third are uncertain
        capture={"enabled": True, "sample": sample},
    )
    build_runner(config, once=True).run()
    queue = TelemetryQueue(tmp_path / "state" / "telemetry.sqlite", device_id=DEVICE)
    captures, events = queue.pending_captures(), queue.pending()
    queue.close()
    records = [Capture.from_dict(json.loads(c.record)) for c in captures]
    uncertain = [e for e in events if e["decision"] == "uncertain"]
    assert uncertain, "the tiny model should leave some items uncertain"
    assert len(records) == (len(events) if sample else len(uncertain))
    assert sorted(r.decision for r in records if r.reason == "uncertain") == sorted(
        e["decision"] for e in uncertain
    )
    for capture, record in zip(captures, records, strict=True):
        assert parse_id(record.id)[1] == DEVICE
        assert capture.key.endswith(record.id)
        assert max(Image.open(io.BytesIO(capture.jpeg)).size) <= 1024
        assert record.predicted_class != "uncertain"


def test_the_http_sink_posts_each_capture_object_with_its_key(tmp_path):
    from edge.telemetry import HttpSink
    from tests.edge.test_edge_telemetry import IdempotentEndpoint

    endpoint = IdempotentEndpoint()
    queue = TelemetryQueue(tmp_path / "q.sqlite", device_id=DEVICE, max_captures=10)
    key = f"captures/{DEVICE}/2026/12/05/20261205T120000Z-0123456789ab-{DEVICE}"
    queue.record({"decision": "uncertain"}, capture=QueuedCapture("c1", key, b"jpeg", b"{}"))
    try:
        Uploader(queue, None, capture_sink=HttpSink(endpoint.url)).flush()
    finally:
        endpoint.close()
    assert endpoint.bodies == {f"{key}.jpg": b"jpeg", f"{key}.json": b"{}"}
    assert queue.stats()["captures"]["uploaded"] == 1
    assert queue.stats()["depth"] == 1  # no event sink: the events wait
    queue.close()
