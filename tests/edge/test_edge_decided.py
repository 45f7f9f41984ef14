"""A watched folder after a restart: the files decided before are not decided again, and a
decision sent again (a kill between its event and its memory) carries the same event id."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge.decided import DECIDED_FILE, DecidedFiles, event_id, file_key
from edge.runner import Runner
from edge.telemetry import TelemetryQueue, Uploader
from edge.wiring import build_runner
from tests.conftest import ROOT
from tests.edge.conftest import EDGE_TIMEOUT
from tests.edge.test_edge_runner import ALL_SAMPLES, edge_config

FILES = 6


def inbox_with(tmp_path: Path, count: int = FILES) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    for i, path in enumerate(ALL_SAMPLES[:count]):
        (inbox / f"{i}.jpg").write_bytes(path.read_bytes())
    return inbox


def kill_and_restart(
    tmp_path: Path,
    registry,
    inbox: Path,
    done: Callable[[int], bool],
    *,
    device: str,
    extra: str = "",
) -> None:
    """The service as systemd runs it, through a kill: start it on `inbox`, SIGKILL it once
    `done(FILES)`, start it again, drop one more file, stop it (SIGTERM) once `done(FILES + 1)`;
    it must exit 0. `extra` is appended to its YAML config."""
    state = tmp_path / "state"
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"device_id: {device}\nstate_dir: {state}\n"
        f"model:\n  registry: {registry.uri}\n  num_threads: 1\n"
        f"source:\n  kind: folder\n  path: {inbox}\n  poll_s: 0.05\n"
        f"actuators: []\n{extra}"
    )
    log = tmp_path / "stderr.log"

    def start() -> subprocess.Popen:
        with log.open("a") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def wait_for(count: int, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + EDGE_TIMEOUT
        while not done(count):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"timed out waiting for {count} files"
            time.sleep(0.05)

    process = start()
    try:
        wait_for(FILES, process)
        process.send_signal(signal.SIGKILL)
        process.wait(EDGE_TIMEOUT)
        process = start()
        (inbox / "later.jpg").write_bytes(ALL_SAMPLES[FILES].read_bytes())
        wait_for(FILES + 1, process)  # found after the folder's first pass: none re-decided
        process.send_signal(signal.SIGTERM)
        process.wait(EDGE_TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, log.read_text()


def service(tmp_path: Path, registry, inbox: Path) -> Runner:
    """A runner as the service builds it (watching the folder), driven by hand."""
    config = edge_config(
        tmp_path, registry, actuators=[], source={"kind": "folder", "path": inbox, "poll_s": 0.01}
    )
    return build_runner(config)


def decide_what_is_there(runner: Runner) -> list[str]:
    """One pass of the service's loop over the folder: until the source's first idle tick."""
    names = []
    for frame in runner.source.frames(runner.stop):
        if frame is None:
            break
        runner.handle(frame)
        names.append(frame.name)
    return names


def queued(state: Path) -> list[dict]:
    queue = TelemetryQueue(state / "telemetry.sqlite", device_id="x")
    try:
        return queue.pending()
    finally:
        queue.close()


def remembered(state: Path) -> int:
    with sqlite3.connect(state / DECIDED_FILE) as db:
        return db.execute("SELECT count(*) FROM decided").fetchone()[0]


def restart(tmp_path: Path, registry, inbox: Path) -> list[str]:
    runner = service(tmp_path, registry, inbox)
    try:
        return decide_what_is_there(runner)
    finally:
        runner.shutdown()


def expected_id(inbox: Path, name: str, version: str = "v1") -> str:
    info = (inbox / name).stat()
    return event_id("bin-7", file_key(name, info.st_size, info.st_mtime_ns), version)


def test_restarts_do_not_decide_the_folder_again(tmp_path, edge_registry):
    inbox = inbox_with(tmp_path)
    state = tmp_path / "state"
    names = sorted(restart(tmp_path, edge_registry, inbox))
    assert len(names) == FILES
    for _ in range(3):
        assert restart(tmp_path, edge_registry, inbox) == []  # was: all six, every time
    (inbox / "new.jpg").write_bytes(ALL_SAMPLES[FILES].read_bytes())
    assert restart(tmp_path, edge_registry, inbox) == ["new.jpg"]

    events = queued(state)
    assert sorted(e["source"] for e in events) == sorted([*names, "new.jpg"])
    # The id is the file's (name, size, mtime) and the model version, on this device.
    assert {e["event_id"] for e in events} == {expected_id(inbox, e["source"]) for e in events}

    # A file that leaves the folder is forgotten (the folder bounds the memory) ...
    (inbox / "0.jpg").rename(tmp_path / "0.jpg")
    assert restart(tmp_path, edge_registry, inbox) == []
    assert remembered(state) == FILES
    # ... and one put back is decided again (as before a restart), under the same id.
    (tmp_path / "0.jpg").rename(inbox / "0.jpg")
    assert restart(tmp_path, edge_registry, inbox) == ["0.jpg"]
    assert len(queued(state)) == FILES + 1


def test_a_decision_sent_again_carries_the_same_event_id(tmp_path, edge_registry):
    """The memory lost (a kill after the event was committed, before the file was
    remembered): the folder is decided again, but no event is queued twice, and one already
    uploaded is uploaded again under the id it had, so the consumer can de-duplicate it."""
    inbox = inbox_with(tmp_path)
    state = tmp_path / "state"
    restart(tmp_path, edge_registry, inbox)
    first = {e["source"]: e["event_id"] for e in queued(state)}
    assert len(first) == FILES

    (state / DECIDED_FILE).unlink(missing_ok=True)
    assert len(restart(tmp_path, edge_registry, inbox)) == FILES  # decided again ...
    assert {e["source"]: e["event_id"] for e in queued(state)} == first  # ... not queued again

    class Memory:
        uri = "memory://"

        def __init__(self) -> None:
            self.bodies: list[bytes] = []

        def put(self, key: str, body: bytes) -> None:
            self.bodies.append(body)

        def put_heartbeat(self, device_id: str, body: bytes) -> None:
            pass

    queue = TelemetryQueue(state / "telemetry.sqlite", device_id="bin-7")
    sink = Memory()
    assert Uploader(queue, sink).flush() == FILES
    assert queue.stats()["recorded"] == FILES
    queue.close()
    (state / DECIDED_FILE).unlink(missing_ok=True)
    restart(tmp_path, edge_registry, inbox)
    queue = TelemetryQueue(state / "telemetry.sqlite", device_id="bin-7")
    Uploader(queue, sink).flush()
    queue.close()
    sent = [json.loads(line) for body in sink.bodies for line in body.splitlines()]
    assert len(sent) == 2 * FILES
    assert {e["event_id"] for e in sent} == set(first.values())  # the same ids, sent twice


def test_the_memory_is_bounded(tmp_path):
    decided = DecidedFiles(tmp_path / DECIDED_FILE, max_entries=3)
    for n in range(5):
        decided.add(f"f{n}")
    assert len(decided) == 3 and "f0" not in decided and "f4" in decided
    decided.retain(["f3", "f4", "other"])
    assert len(decided) == 2
    decided.close()
    reopened = DecidedFiles(tmp_path / DECIDED_FILE)
    assert {k for k in ("f2", "f3", "f4") if k in reopened} == {"f3", "f4"}
    reopened.close()


def test_once_still_decides_every_file(tmp_path, edge_registry):
    """`--once` (a trial, `make edge-run`) decides what it is asked to, again and again, under
    the same event ids."""
    inbox = inbox_with(tmp_path, 2)
    source = {"kind": "folder", "path": inbox, "watch": False}
    config = edge_config(tmp_path, edge_registry, actuators=[], source=source)
    for _ in range(2):
        assert build_runner(config, once=True).run().decisions == 2
    assert len(queued(tmp_path / "state")) == 2


def test_a_killed_service_does_not_decide_its_folder_again(tmp_path, edge_registry):
    """The service as systemd runs it: SIGKILL once every file is decided, start again, drop
    one more file: only that one is decided, and the queue holds each file once."""
    inbox = inbox_with(tmp_path)
    state = tmp_path / "state"

    def decided(count: int) -> bool:  # the events queued and the files remembered
        if not (state / "telemetry.sqlite").exists() or len(queued(state)) < count:
            return False
        return not (state / DECIDED_FILE).exists() or remembered(state) >= count

    kill_and_restart(tmp_path, edge_registry, inbox, decided, device="bin-5")
    events = queued(state)
    assert len(events) == FILES + 1
    assert len({e["source"] for e in events}) == len({e["event_id"] for e in events}) == FILES + 1
    assert json.loads((state / "health.json").read_text())["decisions"] == 1


def test_a_decision_not_recorded_is_not_remembered(tmp_path, edge_registry):
    """A full disk kept the event out of the queue: the file is not remembered either, so
    after a restart it is decided again, and recorded then."""
    inbox = inbox_with(tmp_path, 2)
    runner = service(tmp_path, edge_registry, inbox)

    def full_disk(event: dict, **_: object) -> str:
        raise sqlite3.OperationalError("database or disk is full")

    runner.queue.record = full_disk
    assert len(decide_what_is_there(runner)) == 2
    assert runner.stats.telemetry_errors == 2
    runner.shutdown()
    assert sorted(restart(tmp_path, edge_registry, inbox)) == ["0.jpg", "1.jpg"]
    assert len(queued(tmp_path / "state")) == 2


def test_without_room_for_the_memory_the_ids_stay_the_same(tmp_path, edge_registry):
    inbox = inbox_with(tmp_path, 2)
    state = tmp_path / "state"
    (state / DECIDED_FILE).mkdir(parents=True)  # cannot be opened (as on a full disk)
    assert len(restart(tmp_path, edge_registry, inbox)) == 2
    assert len(restart(tmp_path, edge_registry, inbox)) == 2  # decided again ...
    events = queued(state)
    assert {e["event_id"] for e in events} == {expected_id(inbox, e["source"]) for e in events}
    assert len(events) == 2  # ... under the same ids: queued once
