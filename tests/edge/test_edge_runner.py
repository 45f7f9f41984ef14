"""The runner end to end: folder source -> classify -> GPIO (mock pins) and telemetry; the
command line; config errors; SIGTERM with systemd notifications; the Edge TPU fallback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import ConfigError, EdgeConfig, env_overrides_present, load_config
from edge.decide import Decision
from edge.runner import Runner, Watchdog
from edge.updater import Updater
from edge.wiring import build_runner
from tests.conftest import LABELS, ROOT, SAMPLES
from tests.edge.conftest import EDGE_TIMEOUT, publish
from wastesort import Classifier
from wastesort.registry import Registry

ALL_SAMPLES = sorted(SAMPLES.rglob("*.jpg"))


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[str, Decision]] = []

    def act(self, decision: Decision, context: dict) -> None:
        self.seen.append((context["source"], decision))

    def close(self) -> None:
        pass


def edge_config(tmp_path: Path, registry: Registry, **extra: object) -> EdgeConfig:
    settings = {
        "device_id": "bin-7",
        "state_dir": tmp_path / "state",
        "model": {"registry": registry.uri, "num_threads": 1},
        "source": {"kind": "folder", "path": SAMPLES, "watch": False},
    }
    settings.update(extra)
    return load_config(None, **settings)


def test_folder_source_end_to_end_with_mock_gpio(tmp_path, edge_registry, pins):
    threshold = 0.18
    pin_of = {label: 5 + i for i, label in enumerate([*LABELS, "uncertain"])}
    positions = {label: round(-1 + i * 0.3, 2) for i, label in enumerate([*LABELS, "uncertain"])}
    config = edge_config(
        tmp_path,
        edge_registry,
        decide={"threshold": threshold},
        actuators=[
            {"type": "led", "pins": pin_of},
            {"type": "servo", "pin": 18, "positions": positions},
            {"type": "log"},
        ],
    )
    runner = build_runner(config, once=True, pin_factory=pins)
    recorder = Recorder()
    runner.actuators.append(recorder)
    gpio: list[tuple[set[str], float]] = []  # after each decision: lit LEDs, servo value
    recorder.act = lambda decision, context: (
        Recorder.act(recorder, decision, context),
        gpio.append(
            (
                {label for label, pin in pin_of.items() if pins.pin(pin).state},
                runner.actuators[1].servo.value,
            )
        ),
    )
    queue = runner.queue
    events_before_close = []
    original_close = queue.close

    def keep_events() -> None:
        events_before_close.extend(queue.pending())
        original_close()

    queue.close = keep_events
    stats = runner.run()

    # Every sample decided once, as the core classifies it, `uncertain` below the threshold.
    reference = Classifier.load(edge_registry.uri, cache_dir=tmp_path / "ref")
    expected = []
    for path in ALL_SAMPLES:
        p = reference.predict(path.read_bytes())
        expected.append(p.predicted_class if p.confidence >= threshold else "uncertain")
    assert [d.label for _, d in recorder.seen] == expected
    assert [s for s, _ in recorder.seen] == [str(p.relative_to(SAMPLES)) for p in ALL_SAMPLES]
    assert "uncertain" in expected and len(set(expected)) > 2  # both paths exercised
    assert stats.decisions == stats.frames == len(ALL_SAMPLES)

    # After each decision its LED alone is lit and the flap is at its position.
    assert [lit for lit, _ in gpio] == [{label} for label in expected]
    assert [value for _, value in gpio] == pytest.approx([positions[x] for x in expected])
    # Shutdown released the pins.
    assert not any(pins.pin(pin).state for pin in pin_of.values())

    # Every decision is in the telemetry queue with the fields the fleet needs.
    assert [e["decision"] for e in events_before_close] == expected
    event = events_before_close[0]
    assert event["device_id"] == "bin-7"
    assert event["model_version"] == "v1"
    assert event["accelerator"] == "cpu"
    assert {"at", "confidence", "latency_ms", "event_id"} <= set(event)

    health = json.loads((tmp_path / "state" / "health.json").read_text())
    assert health["model"]["serving"] == "v1"
    assert health["model"]["accelerator"] == "cpu"
    assert health["telemetry"]["depth"] == len(ALL_SAMPLES)
    assert health["decisions"] == len(ALL_SAMPLES)


def test_camera_frames_are_debounced_in_the_runner(tmp_path, edge_registry):
    from tests.edge.test_edge_decide import FakeCamera, rgb

    config = edge_config(
        tmp_path, edge_registry, source={"kind": "camera"}, decide={"k": 3}, actuators=[]
    )
    updater = Updater(config.model, config.state_dir)
    from edge.sources import CameraSource

    camera = FakeCamera([rgb("glass")])
    source = CameraSource(
        config.source.model_copy(
            update={"trigger": config.source.trigger.model_copy(update={"fps": 60})}
        ),
        burst=5,
        camera=camera,
    )
    runner = Runner(
        config,
        source=source,
        updater=updater,
        actuators=[recorder := Recorder()],
        queue=None,
        uploader=None,
        once=True,
    )
    from edge.sources import Frame

    frames = [Frame(name=f"f{i}", array=rgb("glass"), item=1) for i in range(5)]
    decisions = [runner.process(f) for f in frames]
    assert decisions[:2] == [None, None]
    assert decisions[2] is not None and decisions[2].frames == 3
    assert decisions[3:] == [None, None]  # the rest of the burst: already decided
    assert len(recorder.seen) == 1
    assert runner.end_item() is None  # that item was decided

    # A burst that ends (an idle tick from the source) before K frames agreed: `uncertain`.
    for i in range(2):
        assert runner.process(Frame(name=f"g{i}", array=rgb("glass"), item=2)) is None
    ended = runner.end_item()
    assert ended is not None and ended.label == "uncertain" and ended.frames == 2
    assert [d.label for _, d in recorder.seen] == [decisions[2].label, "uncertain"]
    assert recorder.seen[-1][0] == "g0"  # reported under the item's first frame
    runner.shutdown()


def run_cli(*args: str, env: dict | None = None, timeout: float = EDGE_TIMEOUT):
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_once_prints_one_json_line_per_image(tmp_path, edge_registry):
    result = run_cli(
        "run",
        "--source",
        f"folder:{SAMPLES}",
        "--once",
        "--json",
        "--model",
        edge_registry.uri,
        "--state-dir",
        str(tmp_path / "state"),
        "--stats-json",
        str(tmp_path / "stats.json"),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(ALL_SAMPLES)
    assert {line["model_version"] for line in lines} == {"v1"}
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["decisions"] == len(ALL_SAMPLES)
    assert set(stats["stage_ms"]) >= {"decode", "preprocess", "invoke", "decide", "telemetry"}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("decide:\n  k: 0\n", "decide.k: Input should be greater than or equal to 1"),
        ("model:\n  delegate: tpu\n", "model.delegate"),
        ("actuators:\n  - type: servo\n    pin: 18\n    positions: {glass: 0.5}\n", "uncertain"),
        ("source:\n  kind: folder\n", "needs a path"),
        ("nonsense: [\n", "not valid YAML"),
        ("telemetry:\n  batchsize: 5\n", "telemetry.batchsize: unknown key"),
    ],
)
def test_bad_config_is_a_clear_error_at_start(tmp_path, yaml_text, message):
    path = tmp_path / "edge.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=r"invalid|YAML") as info:
        load_config(path)
    assert message in str(info.value)


def test_bad_config_on_the_command_line_has_no_traceback(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text("decide:\n  k: -1\n")
    result = run_cli("run", "--config", str(path), "--once")
    assert result.returncode == 2
    assert "edge: config error" in result.stderr
    assert "decide.k" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = tmp_path / "edge.yaml"
    path.write_text("device_id: from-file\nmodel:\n  alias: production\n")
    monkeypatch.setenv("WASTESORT_EDGE_DEVICE_ID", "bin-42")
    monkeypatch.setenv("WASTESORT_EDGE_MODEL__ALIAS", "canary")
    config = load_config(path)
    assert config.device_id == "bin-42"
    assert config.model.alias == "canary"
    # and a command-line flag wins over the environment
    flagged = load_config(path, model={"alias": "production", "registry": None})
    assert (flagged.device_id, flagged.model.alias) == ("bin-42", "production")
    assert flagged.model.registry == config.model.registry


def test_one_nested_variable_keeps_the_section_defaults(monkeypatch):
    monkeypatch.setenv("wastesort_edge_source__trigger__fps", "5")  # read case-insensitively
    config = load_config()
    assert (config.source.kind, config.source.trigger.fps) == ("camera", 5)
    assert "wastesort_edge_source__trigger__fps" in env_overrides_present()


def test_example_config_is_valid():
    config = load_config(ROOT / "edge" / "edge.example.yaml")
    assert config.model.public_key is not None


def test_sigterm_finishes_the_frame_flushes_and_notifies_systemd(tmp_path, edge_registry):
    """A real service process: READY, WATCHDOG pings, then SIGTERM -> STOPPING, exit 0,
    every decision made before the signal is in the queue."""
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(EDGE_TIMEOUT)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"device_id: bin-9\nstate_dir: {tmp_path / 'state'}\n"
        f"model:\n  registry: {edge_registry.uri}\n  num_threads: 1\n"
        f"source:\n  kind: folder\n  path: {inbox}\n  poll_s: 0.05\n"
        "actuators:\n  - type: log\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "100000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        for i, path in enumerate(ALL_SAMPLES[:4]):
            (inbox / f"{i}.jpg").write_bytes(path.read_bytes())
        while "WATCHDOG=1" not in messages:
            messages.append(sock.recv(4096).decode())
        deadline = time.monotonic() + EDGE_TIMEOUT
        health = tmp_path / "state" / "health.json"
        while time.monotonic() < deadline:  # wait until the four files were decided
            from edge.telemetry import TelemetryQueue

            queue = TelemetryQueue(tmp_path / "state" / "telemetry.sqlite", device_id="x")
            depth = queue.stats()["depth"]
            queue.close()
            if depth == 4:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=EDGE_TIMEOUT)
        assert process.returncode == 0, stderr
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())
    finally:
        process.kill()
        process.wait()
        sock.close()
    assert "SIGTERM: finishing the current frame" in stderr
    assert "Traceback" not in stderr
    assert json.loads(health.read_text())["telemetry"]["depth"] == 4


def test_watchdog_speaks_the_notify_protocol(tmp_path):
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        dog = Watchdog({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert dog.interval == 1.0
        dog.ready("serving v1")
        dog.ping()
        dog.ping()  # rate-limited: within the interval, not sent again
        dog.stopping()
        got = [sock.recv(100).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=serving v1", "WATCHDOG=1", "STOPPING=1"]
    assert not Watchdog({}).enabled
    Watchdog({}).ping()  # no socket: a no-op


def test_missing_edge_tpu_falls_back_to_the_cpu(tmp_path, tiny_int8, caplog):
    """An `edgetpu` build is published and configured, but libedgetpu is not installed:
    the CPU model serves, and the health report says so."""
    registry = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "pc")
    fake_edgetpu = tmp_path / "model_edgetpu.tflite"
    fake_edgetpu.write_bytes(tiny_int8.read_bytes() + b"\0")  # another file, same network
    publish(
        registry, tiny_int8, "v1", extra_files={"edgetpu": fake_edgetpu}, aliases=["production"]
    )
    config = edge_config(tmp_path, registry, actuators=[])
    config.model.delegate = "edgetpu"
    runner = build_runner(config, once=True)
    stats = runner.run()
    assert stats.decisions == len(ALL_SAMPLES)
    assert runner.classifier.runtime.delegate is None
    assert "Edge TPU delegate unavailable" in caplog.text
    state = json.loads((tmp_path / "state" / "models" / "state.json").read_text())
    assert state["current"]["variant"] is None  # the CPU artifact was installed
    health = json.loads((tmp_path / "state" / "health.json").read_text())
    assert health["model"]["accelerator"] == "cpu"
    assert health["model"]["runtime"]["delegate"] is None


def test_edge_never_imports_tensorflow(tmp_path, edge_registry):
    code = (
        "import sys, edge.runner, edge.updater, edge.telemetry, edge.sources, edge.actuators, "
        "edge.health, edge.__main__, wastesort.registry.http\n"
        "from edge.wiring import build_runner\n"
        "from edge.config import load_config\n"
        f"c = load_config(None, state_dir={str(tmp_path / 's')!r}, "
        f"model={{'registry': {edge_registry.uri!r}}}, "
        f"source={{'kind': 'image', 'path': {str(ALL_SAMPLES[0])!r}}}, actuators=[])\n"
        "build_runner(c, once=True).run()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_expected_runtime_is_the_one_in_use(tmp_path, edge_registry):
    """`make test-pi` sets WASTESORT_EXPECT_RUNTIME=tflite-runtime: prove it is not
    silently running on something else."""
    expected = os.environ.get("WASTESORT_EXPECT_RUNTIME", "ai-edge-litert")
    updater = Updater(edge_config(tmp_path, edge_registry).model, tmp_path / "state")
    assert updater.start().runtime.name == expected


def test_no_camera_library_is_a_clear_error(tmp_path, edge_registry):
    for module in ("picamera2", "cv2"):
        if (
            subprocess.run(
                [sys.executable, "-c", f"import {module}"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            pytest.skip(f"{module} is installed here")
    result = run_cli(
        "run", "--source", "camera", "--once", "--model", edge_registry.uri,
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "edge: cannot start: no camera library" in result.stderr
    assert "picamera2" in result.stderr and "opencv" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_status_prints_the_last_heartbeat(tmp_path, edge_registry):
    state = tmp_path / "state"
    assert run_cli("status", "--state-dir", str(state)).returncode == 1  # none yet
    run = run_cli(
        "run", "--source", f"image:{ALL_SAMPLES[0]}", "--once", "--model", edge_registry.uri,
        "--state-dir", str(state),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    status = run_cli("status", "--state-dir", str(state))
    assert json.loads(status.stdout)["model"]["serving"] == "v1"


def test_a_missing_public_key_file_is_a_config_error(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text(f"model:\n  public_key: {tmp_path / 'nope.pub'}\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert "model.public_key" in result.stderr and "Traceback" not in result.stderr


def test_webhook_and_mqtt_actuators(tmp_path):
    import httpx

    from edge.actuators import ActuatorError, WebhookActuator, build_actuators
    from edge.config import MqttActuatorConfig, WebhookActuatorConfig

    posted = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204 if len(posted) == 1 else 500)

    webhook = WebhookActuator(WebhookActuatorConfig(url="https://bins.example/hook"))
    webhook.client = httpx.Client(transport=httpx.MockTransport(answer))
    decision = Decision("glass", 0.9, 3, "v1", {"glass": 0.9})
    webhook.act(decision, {"device_id": "bin-1", "source": "f1", "latency_ms": 12.5})
    assert posted[0]["decision"] == "glass" and posted[0]["device_id"] == "bin-1"
    with pytest.raises(httpx.HTTPStatusError):  # the runner logs it and carries on
        webhook.act(decision, {})
    webhook.close()

    try:
        import paho.mqtt  # noqa: F401
    except ImportError:
        with pytest.raises(ActuatorError, match="pip install 'paho-mqtt"):
            build_actuators([MqttActuatorConfig(host="broker.local")], device_id="bin-1")


def test_a_failing_actuator_or_telemetry_never_stops_the_bin(tmp_path, edge_registry):
    import sqlite3

    class Broken:
        name = "broken"

        def act(self, decision, context):
            raise OSError("servo jammed")

        def close(self):
            pass

    config = edge_config(tmp_path, edge_registry, actuators=[])
    runner = build_runner(config, once=True)
    recorder = Recorder()
    runner.actuators[:] = [Broken(), recorder]

    def full_disk(event, **_):
        raise sqlite3.OperationalError("database or disk is full")

    runner.queue.record = full_disk
    stats = runner.run()
    assert stats.decisions == len(ALL_SAMPLES) == len(recorder.seen)  # the next actuator ran
    assert stats.telemetry_errors == len(ALL_SAMPLES)
    health = json.loads((tmp_path / "state" / "health.json").read_text())
    assert "servo jammed" in health["last_error"] or "disk is full" in health["last_error"]


class HeartbeatSink:
    """A telemetry sink that keeps the heartbeats it was sent."""

    uri = "memory://"

    def __init__(self) -> None:
        self.beats: list[dict] = []

    def put(self, key: str, body: bytes) -> None:
        raise OSError("offline")

    def put_heartbeat(self, device_id: str, body: bytes) -> None:
        self.beats.append(json.loads(body))


def disk_full(*_: object) -> None:
    raise OSError(28, "No space left on device")


def test_a_full_disk_at_start_does_not_stop_the_sorting(tmp_path, edge_registry, monkeypatch):
    """Neither the telemetry queue nor health.json can be written: the runner still starts,
    decides and actuates every item, and the heartbeat it still sends says why."""
    import edge.health

    config = edge_config(tmp_path, edge_registry, actuators=[])
    (tmp_path / "state" / "telemetry.sqlite").mkdir(parents=True)  # cannot be opened
    monkeypatch.setattr(edge.health, "write_atomic", disk_full)
    sink = HeartbeatSink()
    runner = build_runner(config, once=True, sink=sink)
    assert runner.queue is None
    recorder = Recorder()
    runner.actuators.append(recorder)
    stats = runner.run()
    assert stats.decisions == len(recorder.seen) == len(ALL_SAMPLES)
    assert stats.telemetry_errors == len(ALL_SAMPLES)
    assert len(sink.beats) == 2  # at start and at exit, though health.json was not written
    telemetry = sink.beats[-1]["telemetry"]
    assert "telemetry storage unavailable" in telemetry["error"]
    assert telemetry["not_recorded"] == len(ALL_SAMPLES)
    assert "heartbeat not written" in runner.health.last_error
    assert not (tmp_path / "state" / "health.json").exists()


def test_the_heartbeat_outlives_a_full_disk(tmp_path, edge_registry, monkeypatch):
    """ENOSPC on health.json is logged and retried at the next interval; once the disk has
    room again health.json is fresh, and the failure is in its last_error."""
    import edge.health

    config = edge_config(tmp_path, edge_registry, actuators=[], health={"interval_s": 0.01})
    runner = build_runner(config, once=True, sink=(sink := HeartbeatSink()))
    real_write, failures = edge.health.write_atomic, []

    def full_then_free(path: Path, body: bytes) -> None:
        if len(failures) < 3:
            failures.append(path)
            disk_full()
        real_write(path, body)

    monkeypatch.setattr(edge.health, "write_atomic", full_then_free)
    runner._background("heartbeat", runner._heartbeats)
    health = tmp_path / "state" / "health.json"
    deadline = time.monotonic() + EDGE_TIMEOUT
    while not health.exists():
        assert runner._threads[0].is_alive(), "the heartbeat thread died"
        assert time.monotonic() < deadline, "no heartbeat after the disk recovered"
        time.sleep(0.01)
    runner.shutdown()
    assert len(failures) == 3
    assert len(sink.beats) >= 4  # sent while health.json could not be written, too
    assert "No space left on device" in json.loads(health.read_text())["last_error"]


def test_the_systemd_unit_honours_the_configured_state_dir(tmp_path, monkeypatch):
    """The unit's command line passes no flag that would override edge.yaml or edge.env
    (flags win over both); with neither, state_dir is the unit's StateDirectory."""
    import shlex

    from edge.__main__ import _overrides, _parser

    monkeypatch.delenv("WASTESORT_EDGE_STATE_DIR", raising=False)
    unit = (ROOT / "edge" / "systemd" / "wastesort-edge.service").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in unit if line.startswith(("ExecStart=", "State")))
    argv = shlex.split(settings["ExecStart"])
    args = _parser().parse_args(argv[argv.index("edge") + 1 :])
    assert args.command == "run" and args.config == Path("/etc/wastesort/edge.yaml")
    args.config = tmp_path / "edge.yaml"

    args.config.write_text("")
    assert load_config(args.config, **_overrides(args)).state_dir == Path(
        "/var/lib", settings["StateDirectory"]
    )
    args.config.write_text(f"state_dir: {tmp_path / 'from-yaml'}\n")
    assert load_config(args.config, **_overrides(args)).state_dir == tmp_path / "from-yaml"
    monkeypatch.setenv("WASTESORT_EDGE_STATE_DIR", str(tmp_path / "from-env"))
    assert load_config(args.config, **_overrides(args)).state_dir == tmp_path / "from-env"


def test_an_interrupted_heartbeat_write_is_cleaned_at_start(tmp_path, edge_registry):
    state = tmp_path / "state"
    state.mkdir()
    stale = state / ".health.json.k3j2l1.tmp"  # write_atomic's temp name, left by a kill
    stale.write_text("{")
    build_runner(edge_config(tmp_path, edge_registry, actuators=[]), once=True).shutdown()
    assert not stale.exists()
    assert (state / "health.json").exists()
