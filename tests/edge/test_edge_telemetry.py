"""Telemetry: nothing lost across kill -9, nothing duplicated through outages and crashes in
the middle of an upload, a bounded queue whose evictions are reported, backoff with jitter."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from edge.config import load_config
from edge.telemetry import HttpSink, S3Sink, TelemetryQueue, Uploader, backoff_delay
from tests.conftest import ROOT, moto_bucket
from tests.edge.conftest import EDGE_TIMEOUT

BUCKET = "wastesort-telemetry-test"

WRITER = """
import sys
from edge.telemetry import TelemetryQueue
queue = TelemetryQueue(sys.argv[1], device_id="bin-3")
n = 0
while True:
    event_id = queue.record({"decision": "glass", "confidence": 0.9, "n": n})
    print(event_id, flush=True)  # acknowledged: committed before this line
    n += 1
"""


def kill_writer_after(path: Path, acknowledged: int) -> set[str]:
    """Run a process that records events as fast as it can; SIGKILL it mid-stream."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = set()
    try:
        for line in process.stdout:
            seen.add(line.strip())
            if len(seen) >= acknowledged:
                os.kill(process.pid, signal.SIGKILL)
                break
        rest, _ = process.communicate(timeout=EDGE_TIMEOUT)
    finally:
        process.kill()
    seen.update(line.strip() for line in rest.splitlines() if line.strip())
    assert process.returncode == -signal.SIGKILL
    return seen


@pytest.fixture
def s3():
    with moto_bucket(BUCKET) as client:
        yield client


def uploaded(client) -> list[dict]:
    events = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="telemetry/bin-")
    for page in pages:
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            if "/events/" in obj["Key"]:
                events.extend(json.loads(line) for line in body.decode().splitlines())
    return events


class FlakySink:
    """S3 through a bad network: the first puts fail to connect; one put reaches S3 but its
    answer is lost (the device cannot tell it from a failure)."""

    def __init__(self, sink: S3Sink, *, refuse: int, lose_answer_of: int) -> None:
        self.sink = sink
        self.uri = sink.uri
        self.refuse = refuse
        self.lose_answer_of = lose_answer_of
        self.calls = 0

    def put(self, key: str, body: bytes) -> None:
        self.calls += 1
        if self.calls <= self.refuse:
            raise EndpointConnectionError(endpoint_url="https://s3.eu-west-1.amazonaws.com")
        self.sink.put(key, body)
        if self.calls == self.lose_answer_of:
            raise ConnectionResetError("connection reset after the upload")

    def put_heartbeat(self, device_id: str, body: bytes) -> None:
        self.sink.put_heartbeat(device_id, body)


def test_kill_9_then_upload_through_an_outage_loses_and_duplicates_nothing(tmp_path, s3):
    path = tmp_path / "telemetry.sqlite"
    acknowledged = kill_writer_after(path, 300)

    # "Reboot": the queue opens cleanly and holds every acknowledged event.
    queue = TelemetryQueue(path, device_id="bin-3")
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    queued = {e["event_id"] for e in queue.pending()}
    assert acknowledged <= queued
    assert queue.stats()["depth"] == len(queued)

    sink = FlakySink(S3Sink(f"s3://{BUCKET}/telemetry", client=s3), refuse=3, lose_answer_of=5)
    uploader = Uploader(queue, sink, batch_size=64, backoff_base_s=1, backoff_max_s=8)
    delays = []
    for attempt in range(20):
        delays.append(uploader.attempt())
        if attempt == 4:  # and a restart in the middle of it all
            queue.close()
            queue = TelemetryQueue(path, device_id="bin-3")
            uploader.queue = queue
        if queue.stats()["depth"] == 0:
            break
    assert delays[:3] == sorted(delays[:3])  # backing off while the network is down
    assert all(0.5 <= d <= 8 for d in delays[:4])
    assert uploader.failures == 0

    events = uploaded(s3)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert all(k.startswith("telemetry/bin-3/events/") for k in keys)  # the device's own prefix
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was uploaded twice"
    assert set(ids) == queued, "an event was lost"
    assert queue.stats() | {"oldest_at": None} == {
        "depth": 0,
        "recorded": len(queued),
        "uploaded": len(queued),
        "evicted": 0,
        "oldest_at": None,
    }
    assert [e["n"] for e in events] == sorted(e["n"] for e in events)  # in order
    queue.close()


class IdempotentEndpoint:
    """An HTTP telemetry endpoint that stores batches by Idempotency-Key, and can hang after
    storing one (so the device is killed before it hears the answer)."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.receipts: Counter[str] = Counter()
        self.hang_on = 0
        self.hanging = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers.get("Idempotency-Key", self.path)
                if key in endpoint.bodies and self.path == "/events":
                    assert endpoint.bodies[key] == body, "a retry changed the batch"
                endpoint.bodies[key] = body
                endpoint.receipts[key] += 1
                if endpoint.hang_on and sum(endpoint.receipts.values()) == endpoint.hang_on:
                    endpoint.hanging.set()
                    threading.Event().wait(EDGE_TIMEOUT)
                    return
                self.send_response(204)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


UPLOADER = """
import sys
from edge.telemetry import HttpSink, TelemetryQueue, Uploader
queue = TelemetryQueue(sys.argv[1], device_id="bin-3")
Uploader(queue, HttpSink(sys.argv[2]), batch_size=40).flush()
"""


def test_kill_9_mid_upload_resends_the_same_batch(tmp_path):
    path = tmp_path / "telemetry.sqlite"
    queue = TelemetryQueue(path, device_id="bin-3")
    recorded = {queue.record({"decision": "metal", "n": n}) for n in range(100)}
    queue.close()
    endpoint = IdempotentEndpoint()
    endpoint.hang_on = 2  # the second batch is stored, then the device dies
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", UPLOADER, str(path), endpoint.url],
            cwd=ROOT,
            stderr=subprocess.PIPE,
        )
        assert endpoint.hanging.wait(EDGE_TIMEOUT)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=EDGE_TIMEOUT)

        queue = TelemetryQueue(path, device_id="bin-3")
        assert queue.stats()["depth"] == 60  # the first batch was acknowledged and dropped
        endpoint.hang_on = 0
        Uploader(queue, HttpSink(endpoint.url), batch_size=40).flush()
    finally:
        endpoint.close()
    assert queue.stats()["depth"] == 0
    keys = list(endpoint.bodies)
    assert len(keys) == 3
    assert endpoint.receipts[keys[1]] == 2  # re-sent, under the same key, byte for byte
    ids = [
        json.loads(line)["event_id"]
        for body in endpoint.bodies.values()
        for line in body.decode().splitlines()
    ]
    assert sorted(ids) == sorted(recorded)
    queue.close()


def test_a_full_queue_evicts_the_oldest_and_reports_it(tmp_path, caplog):
    queue = TelemetryQueue(tmp_path / "t.sqlite", device_id="bin-1", max_events=10)
    for n in range(25):
        queue.record({"decision": "paper", "n": n})
    stats = queue.stats()
    assert stats["depth"] == 10
    assert stats["evicted"] == 15
    assert [e["n"] for e in queue.pending()] == list(range(15, 25))  # the newest kept
    assert "telemetry queue full" in caplog.text

    class Memory:
        uri = "memory://"

        def __init__(self) -> None:
            self.bodies: list[bytes] = []

        def put(self, key: str, body: bytes) -> None:
            self.bodies.append(body)

    sink = Memory()
    Uploader(queue, sink, batch_size=100).flush()
    events = [json.loads(line) for body in sink.bodies for line in body.decode().splitlines()]
    report = [e for e in events if e["kind"] == "evictions"]
    assert report == [report[0]] and report[0]["count"] == 15  # never silent
    assert report[0]["device_id"] == "bin-1"
    for n in range(3):
        queue.record({"decision": "paper", "n": n})
    sink.bodies.clear()
    Uploader(queue, sink).flush()
    again = [json.loads(line) for body in sink.bodies for line in body.decode().splitlines()]
    assert not [e for e in again if e["kind"] == "evictions"]  # reported once
    queue.close()


def test_backoff_is_exponential_with_jitter_and_capped():
    low = [backoff_delay(n, base=2, cap=60, rng=lambda a, b: a) for n in range(1, 9)]
    high = [backoff_delay(n, base=2, cap=60, rng=lambda a, b: b) for n in range(1, 9)]
    assert low == [1, 2, 4, 8, 16, 30, 30, 30]
    assert high == [2, 4, 8, 16, 32, 60, 60, 60]
    assert len({backoff_delay(5, base=2, cap=60) for _ in range(20)}) > 1


def test_runner_flushes_to_s3_and_sends_a_heartbeat(tmp_path, s3, edge_registry):
    from edge.wiring import build_runner
    from tests.edge.test_edge_runner import ALL_SAMPLES, edge_config

    config = edge_config(tmp_path, edge_registry, actuators=[])
    sink = S3Sink(f"s3://{BUCKET}/telemetry", client=s3)
    build_runner(config, once=True, sink=sink).run()
    events = uploaded(s3)
    assert len(events) == len(ALL_SAMPLES)
    assert {e["device_id"] for e in events} == {"bin-7"}
    beat = json.loads(
        s3.get_object(Bucket=BUCKET, Key="telemetry/bin-7/heartbeat.json")["Body"].read()
    )
    assert beat["model"]["version"] == "v1"
    assert beat["telemetry"]["depth"] == 0
    assert beat["telemetry"]["uploaded"] == len(ALL_SAMPLES)


def test_http_sink_sends_idempotency_keys(tmp_path):
    endpoint = IdempotentEndpoint()
    try:
        queue = TelemetryQueue(tmp_path / "t.sqlite", device_id="bin-5")
        queue.record({"decision": "glass"})
        sink = HttpSink(endpoint.url)
        Uploader(queue, sink).flush()
        sink.put_heartbeat("bin-5", b"{}")
    finally:
        endpoint.close()
    assert len(endpoint.bodies) == 2
    assert any(key.startswith("bin-5/") for key in endpoint.bodies)
    queue.close()


def test_an_s3_prefix_the_device_role_cannot_write_is_a_warning_at_start(caplog):
    """The device role allows PutObject only under `telemetry/<thing name>/` (infra)."""
    S3Sink(f"s3://{BUCKET}/telemetry", client=object())
    S3Sink(f"s3://{BUCKET}/fleet-a/telemetry/", client=object())
    assert not caplog.records
    example = load_config(ROOT / "edge" / "edge.example.yaml").telemetry.upload_to
    S3Sink(example, client=object())  # what the docs tell a device to use
    assert not caplog.records
    S3Sink(f"s3://{BUCKET}/edge", client=object())
    S3Sink(f"s3://{BUCKET}", client=object())
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "may write only under s3://<telemetry bucket>/telemetry/" in caplog.text
