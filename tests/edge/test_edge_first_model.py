"""A new device that cannot install its first model (registry unreachable, disk full): it
starts anyway, says why in its heartbeat, retries with backoff, answers SIGTERM, and serves as
soon as a model can be installed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import edge.updater
from edge.first_model import FirstModel
from edge.wiring import build_runner
from tests.conftest import ROOT
from tests.edge.conftest import EDGE_TIMEOUT
from tests.edge.test_edge_runner import ALL_SAMPLES, HeartbeatSink, edge_config


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + EDGE_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_new_device_starts_without_a_model_and_installs_one_when_it_can(
    tmp_path, edge_registry, monkeypatch
):
    registry = Path(edge_registry.uri)
    away = tmp_path / "away"
    registry.rename(away)  # the registry cannot be reached at first ...
    real_write, disk = edge.updater.write_atomic, {"full": True}

    def write(path: Path, data: bytes) -> None:
        if disk["full"]:  # ... and then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(edge.updater, "write_atomic", write)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    model = {"registry": str(registry), "num_threads": 1}
    model.update(install_retry_s=0.01, install_retry_max_s=0.05)
    config = edge_config(
        tmp_path,
        edge_registry,
        actuators=[],
        model=model,
        source={"kind": "folder", "path": inbox, "poll_s": 0.01},
        health={"interval_s": 0.02},
    )
    sink = HeartbeatSink()
    runner = build_runner(config, sink=sink)  # was: RegistryError, exit 1, restart, again
    assert runner.classifier is None
    stats = []
    thread = threading.Thread(target=lambda: stats.append(runner.run()))
    thread.start()
    try:
        wait_for(lambda: len(sink.beats) >= 2, "heartbeats while there is no model")
        waiting = sink.beats[-1]["model"]
        assert waiting["serving"] is None and waiting["version"] is None
        assert "no registry" in waiting["first_install"]["error"]
        assert "no model to serve yet" in sink.beats[-1]["last_error"]

        away.rename(registry)
        wait_for(
            lambda: (
                "No space left"
                in (sink.beats[-1]["model"].get("first_install") or {}).get("error", "")
            ),
            "the full disk in the heartbeat",
        )
        attempts = sink.beats[-1]["model"]["first_install"]["attempts"]
        assert attempts >= 3
        assert (tmp_path / "state" / "health.json").exists()  # health.json is not a model

        disk["full"] = False
        wait_for(lambda: sink.beats[-1]["model"]["serving"] == "v1", "the model to serve")
        assert "first_install" not in sink.beats[-1]["model"]
        (inbox / "a.jpg").write_bytes(ALL_SAMPLES[0].read_bytes())
        wait_for(lambda: sink.beats[-1]["decisions"] == 1, "a decision")
    finally:
        runner.stop.set()
        thread.join(EDGE_TIMEOUT)
    assert stats[0].decisions == 1
    assert json.loads((tmp_path / "state" / "models" / "state.json").read_text())["current"]


def test_the_retries_back_off_up_to_the_cap():
    class Offline:
        calls = 0

        def start(self):
            self.calls += 1
            if self.calls == 6:
                return "model"
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

    stop = threading.Event()
    top = lambda low, high: high  # noqa: E731  (the jitter's largest draw)
    retries = FirstModel(Offline(), OSError("first"), base_s=0.01, cap_s=0.05, rng=top)
    reports: list[str] = []
    ticks: list[float] = []
    found = retries.wait(stop, tick=lambda: ticks.append(time.monotonic()), report=reports.append)
    assert found == "model"
    delays = [float(r.split("retrying in ")[1].split()[0]) for r in reports]
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05, 0.05]  # doubling, then the cap
    assert "attempt 6 failed" in reports[-1] and "Network is unreachable" in reports[-1]
    assert retries.attempts == 6 and len(ticks) >= 6  # the watchdog pinged while waiting

    # SIGTERM while waiting (here: during the first wait of 150-300 s): at once, no model.
    sigterm = threading.Event()
    slow = FirstModel(Offline(), OSError("x"), base_s=300, cap_s=300)
    started = time.monotonic()
    assert slow.wait(sigterm, tick=lambda: None, report=lambda _: sigterm.set()) is None
    assert time.monotonic() - started < 5


def test_the_waiting_service_answers_sigterm_and_systemd(tmp_path):
    """As systemd runs it, with a registry that is not there: READY with a STATUS that says
    why (so systemd does not kill it for starting too slowly), watchdog pings while waiting,
    a heartbeat, and SIGTERM ends it cleanly (exit 0), not a restart loop (exit 1)."""
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.2)
    config = tmp_path / "edge.yaml"
    (inbox := tmp_path / "inbox").mkdir()
    config.write_text(
        f"device_id: bin-new\nstate_dir: {tmp_path / 'state'}\n"
        f"model:\n  registry: {tmp_path / 'no-registry-yet'}\n  install_retry_s: 0.05\n"
        f"source:\n  kind: folder\n  path: {inbox}\nactuators: []\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "100000"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    messages: list[str] = []

    def until(prefix: str, *, running: bool = True) -> None:
        deadline = time.monotonic() + EDGE_TIMEOUT
        while not any(m.startswith(prefix) for m in messages):
            if running and process.poll() is not None:
                pytest.fail(f"exited {process.returncode}: {process.stderr.read()}")
            assert time.monotonic() < deadline, f"no {prefix} from the service"
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096).decode())

    try:
        until("READY=1")
        until("WATCHDOG=1")
        wait_for((tmp_path / "state" / "health.json").exists, "a heartbeat")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=EDGE_TIMEOUT)
        until("STOPPING=1", running=False)
    finally:
        process.kill()
        process.wait()
        sock.close()
    assert process.returncode == 0, stderr
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=no model to serve yet" in ready and "no registry" in ready
    health = json.loads((tmp_path / "state" / "health.json").read_text())
    assert health["model"]["serving"] is None
    assert health["model"]["first_install"]["attempts"] >= 1
    assert "Traceback" not in stderr
