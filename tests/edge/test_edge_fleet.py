"""`python -m edge fleet`: heartbeats written by the real `Health` and sink, read back from a
folder and from S3 (moto); stale devices, version counts, the JSON shape, bad URIs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import edge.health
from edge.__main__ import main
from edge.fleet import read_heartbeats, summarize
from edge.health import Health
from edge.telemetry import S3Sink
from tests.conftest import moto_bucket
from wastesort.registry.local import LocalStore

BUCKET = "wastesort-fleet-test"
HOUR = 3600.0


def runtime(delegate: str | None = None) -> dict:
    return {"name": "ai-edge-litert", "version": "1.2.0", "num_threads": 4, "delegate": delegate}


# device id: (serving version, accelerator, queue depth, drift, last error, age in seconds)
FLEET = {
    "bin-1": ("v2", "cpu", 0, "ok", None, 10.0),
    "bin-2": ("v2", "edgetpu", 3, None, None, 60.0),
    "bin-3": ("v1", "cpu", 250, {"verdict": "drift", "n": 80}, "registry unreachable", 2 * HOUR),
    "bin-10": (None, None, 0, None, "no model to serve yet", 5.0),
}


class _Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def time(self) -> float:
        return self.at


def beat_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send) -> None:
    """Each device's heartbeat, from `Health` with the runner's providers, sent by `send`."""
    now = time.time()
    for device, (version, accelerator, depth, drift, error, age) in FLEET.items():
        monkeypatch.setattr(edge.health, "time", _Clock(now - age))
        health = Health(device, tmp_path / "state" / device)
        health.provide(
            "model",
            lambda v=version, a=accelerator: {
                "version": v,
                "serving": v,
                "runtime": runtime("edgetpu" if a == "edgetpu" else None) if v else None,
                "accelerator": a,
                "last_error": None,
            },
        )
        health.provide("telemetry", lambda d=depth: {"depth": d, "recorded": 9, "uploaded": 9})
        if drift is not None:
            health.provide("drift", lambda d=drift: d)
        if device == "bin-1":  # what edge/records.py provides
            health.provide("uncertain_share", lambda: 0.25)
        if error:
            health.error(error)
        health.beat(send)
    monkeypatch.setattr(edge.health, "time", time)


def folder_sink(root: Path):
    """The S3 sink's layout in a folder: `<root>/<device>/heartbeat.json` (an `s3 sync`)."""

    def send(device_id: str, body: bytes) -> None:
        (root / device_id).mkdir(parents=True, exist_ok=True)
        (root / device_id / "heartbeat.json").write_bytes(body)
        (root / device_id / "events").mkdir(exist_ok=True)
        (root / device_id / "events" / "0001.ndjson").write_bytes(b"{}\n")

    return send


@pytest.fixture
def s3():
    with moto_bucket(BUCKET) as client:
        yield client


def fleet_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["fleet", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def check_fleet(fleet: dict) -> None:
    rows = {row["device"]: row for row in fleet["devices"]}
    assert sorted(rows) == ["bin-1", "bin-10", "bin-2", "bin-3"]
    assert fleet["versions"] == {"v2": 2, "-": 1, "v1": 1}
    assert fleet["expected_version"] == "v2"
    assert fleet["behind"] == ["bin-10", "bin-3"]
    assert fleet["stale"] == ["bin-3"]
    assert fleet["drift"] == {"ok": 1, "drift": 1}
    assert rows["bin-2"]["accelerator"] == "edgetpu"
    assert rows["bin-2"]["runtime"] == "ai-edge-litert 1.2.0"
    assert rows["bin-2"]["queue_depth"] == 3
    assert rows["bin-2"]["drift"] is None
    assert rows["bin-3"]["drift"] == "drift"
    assert rows["bin-3"]["last_error"] == "registry unreachable"
    assert rows["bin-3"]["age_s"] > HOUR
    assert rows["bin-10"]["version"] is None
    assert not rows["bin-1"]["stale"]
    assert rows["bin-1"]["uncertain_share"] == 0.25
    assert rows["bin-2"]["uncertain_share"] is None


def test_a_folder_of_heartbeats(tmp_path, monkeypatch, capsys):
    root = tmp_path / "telemetry"
    beat_all(tmp_path, monkeypatch, folder_sink(root))
    check_fleet(fleet_json(capsys, "--telemetry", str(root)))

    assert main(["fleet", "--telemetry", str(root)]) == 0
    table = capsys.readouterr().out
    header, *lines = table.splitlines()
    assert header.split() == [
        "device",
        "version",
        "runtime",
        "delegate",
        "queue",
        "age",
        "stale",
        "drift",
        "unsure",
        "error",
    ]
    bin1 = next(line for line in lines if line.startswith("bin-1 "))
    assert " 25% " in bin1
    bin3 = next(line for line in lines if line.startswith("bin-3 "))
    assert "v1" in bin3 and "STALE" in bin3 and "drift" in bin3 and "registry unreachable" in bin3
    assert "  v2: 2  (expected)  bin-1, bin-2" in table
    assert "behind v2: bin-10, bin-3" in table
    assert "stale (no heartbeat for 30 min): bin-3" in table


def test_s3_heartbeats_from_the_sink(tmp_path, monkeypatch, capsys, s3):
    sink = S3Sink(f"s3://{BUCKET}/telemetry", client=s3)
    beat_all(tmp_path, monkeypatch, sink.put_heartbeat)
    sink.put("bin-1/events/2026/batch-1.ndjson", b"{}\n")  # events beside it are not read
    check_fleet(fleet_json(capsys, "--telemetry", f"s3://{BUCKET}/telemetry"))
    # the bucket root: the heartbeats are found under telemetry/
    check_fleet(fleet_json(capsys, "--telemetry", f"s3://{BUCKET}"))


def test_stale_minutes_and_expect(tmp_path, monkeypatch, capsys):
    root = tmp_path / "t"
    beat_all(tmp_path, monkeypatch, folder_sink(root))
    fleet = fleet_json(capsys, "--telemetry", str(root), "--stale-minutes", "0.5")
    assert fleet["stale"] == ["bin-2", "bin-3"]
    fleet = fleet_json(capsys, "--telemetry", str(root), "--stale-minutes", "180")
    assert fleet["stale"] == []
    fleet = fleet_json(capsys, "--telemetry", str(root), "--expect", "v1")
    assert fleet["behind"] == ["bin-1", "bin-10", "bin-2"]


def test_json_shape(tmp_path, monkeypatch, capsys):
    root = tmp_path / "t"
    beat_all(tmp_path, monkeypatch, folder_sink(root))
    fleet = fleet_json(capsys, "--telemetry", str(root))
    assert set(fleet) >= {"devices", "versions", "stale", "behind", "expected_version", "drift"}
    assert set(fleet["devices"][0]) == {
        "device",
        "version",
        "runtime",
        "accelerator",
        "queue_depth",
        "last_error",
        "last_error_at",
        "heartbeat_at",
        "age_s",
        "stale",
        "drift",
        "uncertain_share",
    }


def test_a_corrupt_heartbeat_is_a_row_not_a_crash(tmp_path):
    (tmp_path / "bin-9").mkdir()
    (tmp_path / "bin-9" / "heartbeat.json").write_text("{not json")
    (tmp_path / "bin-8").mkdir()  # a device folder without a heartbeat is not listed
    fleet = summarize(read_heartbeats(LocalStore(tmp_path)))
    (row,) = fleet["devices"]
    assert row["device"] == "bin-9" and row["stale"] and "not JSON" in row["last_error"]


def test_an_empty_folder_is_an_empty_fleet(tmp_path, capsys):
    assert main(["fleet", "--telemetry", str(tmp_path)]) == 0
    assert "no heartbeats" in capsys.readouterr().out


@pytest.mark.parametrize(
    "uri",
    ["/no/such/folder", "https://example.com/telemetry", "s3://no-such-bucket-here/telemetry"],
)
def test_an_unreadable_uri_is_exit_2(uri, capsys, s3):
    assert main(["fleet", "--telemetry", uri]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("edge: fleet: ") and "\n" not in err and "Traceback" not in err
    assert captured.out == ""


def test_usage_errors_are_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["fleet"])
    assert exited.value.code == 2
    assert main(["fleet", "--telemetry", str(tmp_path), "--stale-minutes", "0"]) == 2
    assert "--stale-minutes" in capsys.readouterr().err


def test_a_rollout_cohort_is_held_to_its_own_version():
    """During a staged rollout the cohort runs the new version: not `behind`; a cohort device
    still on the stable version, or a stable device on the new one, is."""
    now = time.time()

    def beat(version: str) -> dict:
        return {"at": now, "model": {"serving": version}}

    beats = {"bin-a": beat("v2"), "bin-b": beat("v1"), "bin-c": beat("v1"), "bin-d": beat("v2")}
    cohort = {"bin-a", "bin-c"}
    fleet = summarize(
        beats, now=now, expect="v1", expect_for=lambda d: "v2" if d in cohort else None
    )
    assert fleet["behind"] == ["bin-c", "bin-d"]
    assert fleet["expected_version"] == "v1"
    assert summarize(beats, now=now, expect="v1")["behind"] == ["bin-a", "bin-d"]
