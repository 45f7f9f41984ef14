"""Over-the-air updates: the happy path, every way a new model is refused (sha256, signature,
a corrupt download, a failing self-test), rollback, and a process killed mid-download."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ModelConfig
from edge.updater import Updater
from tests.conftest import ROOT, sample_bytes
from tests.edge.conftest import EDGE_TIMEOUT, RegistryServer, publish
from wastesort.errors import RegistryError
from wastesort.manifest import Manifest
from wastesort.registry import Registry
from wastesort.registry.http import HttpStore
from wastesort.signing import generate_keypair, sign


def make_updater(state: Path, registry_uri: str, **config: object) -> Updater:
    return Updater(ModelConfig(registry=registry_uri, num_threads=1, **config), state)


def release(registry: Registry, tiny_models: Path, version: str, **kwargs: object) -> None:
    """Publish the float tiny model as `version` and point `production` at it."""
    publish(
        registry,
        tiny_models / "tiny_float.tflite",
        version,
        float_model=True,
        aliases=["production"],
        **kwargs,
    )


def edit_manifest(registry: Registry, change) -> None:
    """Rewrite the manifest behind the registry's back (an attacker, a broken publisher)."""
    path = Path(registry.uri) / "manifest.json"
    manifest = Manifest.parse(path.read_bytes())
    change(manifest)
    path.write_bytes(manifest.dumps())


def test_happy_path_verified_self_tested_swapped(tmp_path, edge_registry, tiny_models):
    updater = make_updater(tmp_path / "state", edge_registry.uri)
    first = updater.start()
    assert first.version == "v1"
    assert updater.check() is None  # nothing moved
    assert updater.take_pending() is None

    publish(edge_registry, tiny_models / "tiny_float.tflite", "v2", float_model=True)
    edge_registry.promote("production", "v2", by="test")
    new = updater.check()
    assert new is not None and new.version == "v2"
    assert updater.take_pending() is new
    assert updater.take_pending() is None  # handed over once
    assert updater.status()["version"] == "v2"
    assert updater.status()["last_known_good"] == "v1"
    # Both files are kept, named by sha256; a restart serves v2 without the registry.
    files = {p.name for p in (tmp_path / "state" / "models").iterdir()}
    assert len(files) == 3  # two models + state.json
    offline = make_updater(tmp_path / "state", str(tmp_path / "no-such-registry"))
    assert offline.start().version == "v2"


def refused(updater: Updater, version: str) -> None:
    assert updater.check() is None
    assert updater.take_pending() is None
    assert updater.status()["version"] == "v1"
    assert version in updater.rejected
    assert updater.start().version == "v1"  # and after a restart, too


def test_sha256_mismatch_is_refused(tmp_path, edge_registry, tiny_models):
    updater = make_updater(tmp_path / "state", edge_registry.uri)
    updater.start()
    publish(edge_registry, tiny_models / "tiny_float.tflite", "v2", float_model=True)
    edge_registry.promote("production", "v2", by="test")

    def lie(manifest: Manifest) -> None:
        manifest.versions["v2"].artifact.sha256 = "0" * 64

    edit_manifest(edge_registry, lie)
    refused(updater, "v2")
    assert "sha256" in updater.last_error


def test_a_promoted_version_missing_its_file_keeps_the_old_model(
    tmp_path, edge_registry, tiny_models
):
    updater = make_updater(tmp_path / "state", edge_registry.uri)
    updater.start()
    publish(edge_registry, tiny_models / "tiny_float.tflite", "v2", float_model=True)
    edge_registry.promote("production", "v2", by="test")
    (Path(edge_registry.uri) / "artifacts/v2/model.tflite").unlink()
    assert updater.check() is None
    assert updater.take_pending() is None
    assert updater.status()["version"] == "v1"
    assert "missing" in updater.last_error


def test_bad_signature_is_refused(tmp_path, edge_registry, tiny_models):
    private, public = generate_keypair()
    other_private, _ = generate_keypair()
    key = tmp_path / "fleet.pub"
    key.write_bytes(public)

    def sign_v1(manifest: Manifest) -> None:
        manifest.versions["v1"] = sign(manifest.versions["v1"], private)

    edit_manifest(edge_registry, sign_v1)
    updater = make_updater(tmp_path / "state", edge_registry.uri, public_key=key)
    assert updater.start().version == "v1"  # signed by the fleet key: accepted

    release(edge_registry, tiny_models, "v2", signing_key=other_private)
    refused(updater, "v2")
    assert "signature" in updater.last_error
    assert updater.rejected["v2"]["final"]  # never retried

    release(edge_registry, tiny_models, "v3")  # unsigned
    refused(updater, "v3")
    assert "not signed" in updater.last_error

    release(edge_registry, tiny_models, "v4", signing_key=private)

    def tamper(manifest: Manifest) -> None:  # signed, then its threshold edited
        manifest.versions["v4"].uncertain_threshold = 0.99

    edit_manifest(edge_registry, tamper)
    refused(updater, "v4")


def test_corrupt_download_is_refused_and_retried_later(
    tmp_path, edge_registry, tiny_models, registry_server: RegistryServer
):
    updater = make_updater(tmp_path / "state", registry_server.url)
    assert updater.start().version == "v1"  # over HTTP
    release(edge_registry, tiny_models, "v2")
    registry_server.corrupt = "artifacts/v2/model.tflite"
    refused(updater, "v2")
    assert "does not match" in updater.last_error
    assert not updater.rejected["v2"]["final"]  # a bad network may heal
    cache = tmp_path / "state" / "cache"
    assert not [p for p in cache.iterdir() if p.suffix == ".tflite"]  # nothing half-trusted

    registry_server.corrupt = None
    assert updater.check().version == "v2"


def test_failing_self_test_keeps_the_old_model(tmp_path, edge_registry, tiny_models):
    updater = make_updater(tmp_path / "state", edge_registry.uri)
    updater.start()
    release(edge_registry, tiny_models, "v2", wrong_golden=True)
    refused(updater, "v2")
    assert "golden image" in updater.last_error
    assert updater.rejected["v2"]["final"]
    assert updater.check() is None  # not downloaded again on the next poll


def test_a_model_failing_at_run_time_is_rolled_back(tmp_path, edge_registry, tiny_models):
    from edge.runner import Runner
    from edge.sources import Frame, ImageSource
    from tests.edge.test_edge_runner import edge_config

    config = edge_config(tmp_path, edge_registry, actuators=[])
    updater = Updater(config.model, config.state_dir)
    runner = Runner(
        config,
        source=ImageSource(ROOT / "samples" / "glass" / "glass6.jpg"),
        updater=updater,
        actuators=[],
        queue=None,
        uploader=None,
        once=True,
    )
    release(edge_registry, tiny_models, "v2")
    assert updater.check() is not None
    runner._swap(updater.take_pending(), "update")  # as the runner's loop does
    assert runner.classifier.version == "v2"

    def broken(*_: object, **__: object):
        raise RuntimeError("invoke failed")

    runner.classifier.predict_arrays = broken  # the new model dies on real frames
    for i in range(config.model.rollback_after_errors):
        runner.handle(Frame(name=f"f{i}", data=sample_bytes("glass"), item=i + 1))
    assert runner.classifier.version == "v1"
    assert updater.status()["version"] == "v1"
    assert "v2" in updater.status()["rejected"]
    assert "rolled back from v2 to v1" in updater.last_error
    assert updater.check() is None  # v2 is not taken again
    runner.shutdown()


def test_a_failing_model_with_a_verified_update_pending_switches_to_it(
    tmp_path, edge_registry, tiny_models
):
    updater = make_updater(tmp_path / "state", edge_registry.uri)
    assert updater.start().version == "v1"
    release(edge_registry, tiny_models, "v2")
    assert updater.check() is not None  # v2 installed and pending; v1 still running
    restored = updater.rollback("v1 failed on a frame")
    assert restored is not None
    assert restored.version == "v2"  # forward to the verified update, not back
    assert "v2" not in updater.status()["rejected"]
    assert updater.take_pending() is None


CRASHING_UPDATER = """
import sys
from edge.config import ModelConfig
from edge.updater import Updater
updater = Updater(ModelConfig(registry=sys.argv[1], num_threads=1), sys.argv[2])
print("serving", updater.start().version, flush=True)
updater.check()
print("finished", flush=True)
"""


def test_killed_mid_download_the_old_model_still_serves(
    tmp_path, edge_registry, tiny_models, registry_server: RegistryServer
):
    state = tmp_path / "state"
    assert make_updater(state, registry_server.url).start().version == "v1"
    release(edge_registry, tiny_models, "v2")
    registry_server.stall = "artifacts/v2/model.tflite"

    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_UPDATER, registry_server.url, str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert registry_server.stalled.wait(EDGE_TIMEOUT), process.stderr
        os.kill(process.pid, signal.SIGKILL)  # the power cut, as near as a test gets
        stdout, _ = process.communicate(timeout=EDGE_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert stdout.splitlines() == ["serving v1"]  # it died inside the download
    assert list((state / "cache").glob(".download-*"))  # the interrupted temp file

    registry_server.stall = None
    restarted = make_updater(state, registry_server.url)
    clf = restarted.start()
    assert clf.version == "v1"
    assert clf.predict(sample_bytes("glass")).model_version == "v1"
    assert not list((state / "cache").glob(".download-*"))  # cleaned at start
    assert (
        json.loads((state / "models" / "state.json").read_text())["current"]["entry"]["version"]
        == "v1"
    )
    assert restarted.check().version == "v2"  # and the update completes on the next poll


def test_https_registry_is_read_only(tmp_path, registry_server: RegistryServer):
    registry = Registry(HttpStore(registry_server.url), cache_dir=tmp_path / "c")
    assert registry.resolve("production").version == "v1"
    with pytest.raises(RegistryError, match="read-only"):
        registry.promote("production", "v1", by="x")
    with pytest.raises(RegistryError, match="read-only"):
        registry.store.put_new("x", tmp_path)
    missing = Registry(HttpStore(registry_server.url + "/nothing-here"), cache_dir=tmp_path)
    with pytest.raises(RegistryError, match="no registry"):
        missing.manifest()


def test_poll_interval_has_jitter(tmp_path, edge_registry):
    updater = make_updater(tmp_path / "s", edge_registry.uri, poll_interval_s=100, poll_jitter=0.2)
    assert updater.next_delay(lambda a, b: a) == pytest.approx(80)
    assert updater.next_delay(lambda a, b: b) == pytest.approx(120)
    delays = {round(updater.next_delay(), 3) for _ in range(20)}
    assert len(delays) > 1
    assert all(80 <= d <= 120 for d in delays)


def test_a_running_service_swaps_models_between_frames(tmp_path, edge_registry, tiny_models):
    """The service as systemd runs it: the alias moves while it classifies a watched folder;
    frames before the swap are v1's, frames after are v2's, none is lost."""
    import time

    from edge.telemetry import TelemetryQueue
    from tests.edge.test_edge_runner import ALL_SAMPLES

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    state = tmp_path / "state"
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"device_id: bin-2\nstate_dir: {state}\n"
        f"model:\n  registry: {edge_registry.uri}\n  num_threads: 1\n"
        "  poll_interval_s: 0.2\n  poll_jitter: 0\n"
        f"source:\n  kind: folder\n  path: {inbox}\n  poll_s: 0.05\n"
        "actuators: []\n"
    )

    def queued() -> list[dict]:
        queue = TelemetryQueue(state / "telemetry.sqlite", device_id="x")
        try:
            return queue.pending()
        finally:
            queue.close()

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + EDGE_TIMEOUT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for((state / "health.json").exists, "the service to start")
        for i, path in enumerate(ALL_SAMPLES[:3]):
            (inbox / f"a{i}.jpg").write_bytes(path.read_bytes())
        wait_for(lambda: len(queued()) == 3, "three decisions by v1")
        publish(
            edge_registry,
            tiny_models / "tiny_float.tflite",
            "v2",
            float_model=True,
            aliases=["production"],
        )
        models = state / "models" / "state.json"
        wait_for(
            lambda: json.loads(models.read_text())["current"]["entry"]["version"] == "v2",
            "v2 to be installed",
        )
        time.sleep(1.0)  # the swap happens at the next tick of the loop (every 0.05 s idle)
        for i, path in enumerate(ALL_SAMPLES[3:6]):
            (inbox / f"b{i}.jpg").write_bytes(path.read_bytes())
        wait_for(lambda: len(queued()) == 6, "three decisions by v2")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=EDGE_TIMEOUT)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    assert "now serving v2 (was v1; update)" in stderr
    events = queued()
    assert [e["model_version"] for e in events] == ["v1"] * 3 + ["v2"] * 3
    assert [e["source"] for e in events] == [
        "a0.jpg",
        "a1.jpg",
        "a2.jpg",
        "b0.jpg",
        "b1.jpg",
        "b2.jpg",
    ]


def test_self_test_checks_class_only_where_the_model_was_sure(tmp_path, tiny_int8):
    """A golden image published below the uncertain threshold may tip to another class on
    another runtime; its scores must still be close. A sure one must keep its class."""
    from tests.conftest import tiny_fields
    from tests.edge.conftest import golden_for
    from wastesort.registry import GoldenSample

    registry = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "pc")
    real = golden_for(tiny_int8, tiny_fields())[0]
    other = next(label for label in real.scores if label != real.expected_class)
    unsure = GoldenSample("unsure.jpg", real.data, other, real.scores)  # class "wrong"
    registry.publish(
        tiny_int8,
        version="v1",
        golden=[unsure],
        aliases=["production"],
        **tiny_fields(uncertain_threshold=0.99),  # every tiny score is below it
    )
    assert make_updater(tmp_path / "a", registry.uri).start().version == "v1"

    drifted = GoldenSample(
        "drift.jpg", real.data, real.expected_class, dict.fromkeys(real.scores, 0.0)
    )
    registry.publish(
        tiny_int8, version="v2", golden=[drifted], aliases=["production"], **tiny_fields()
    )
    updater = make_updater(tmp_path / "a", registry.uri)
    assert updater.check() is None
    assert "published 0.0000" in updater.last_error


def coral(monkeypatch: pytest.MonkeyPatch, *, plugged: bool) -> None:
    """Plug or unplug a fake Coral: the updater sees a delegate (or none); the fake Edge TPU
    build (the tiny model plus one byte) still runs on the CPU inside the classifier."""
    import wastesort.artifacts
    import wastesort.classifier

    delegate = object() if plugged else None
    monkeypatch.setattr(wastesort.artifacts, "load_edgetpu_delegate", lambda: delegate)
    monkeypatch.setattr(wastesort.classifier, "load_edgetpu_delegate", lambda: None)


def install_on_the_coral(tmp_path: Path, tiny_models: Path, monkeypatch) -> tuple[Registry, Path]:
    """v1 (float) on the CPU, no Coral at the first boot; then v2 (int8) on the Edge TPU,
    with v1 its last known good. Returns the registry and the state folder."""
    registry = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "pc")
    release(registry, tiny_models, "v1")
    state = tmp_path / "state"
    coral(monkeypatch, plugged=False)
    assert make_updater(state, registry.uri, delegate="edgetpu").start().version == "v1"
    coral(monkeypatch, plugged=True)
    tiny_int8 = tiny_models / "tiny_int8.tflite"
    build = tmp_path / "model_edgetpu.tflite"
    build.write_bytes(tiny_int8.read_bytes() + b"\0")
    publish(registry, tiny_int8, "v2", extra_files={"edgetpu": build}, aliases=["production"])
    updater = make_updater(state, registry.uri, delegate="edgetpu")
    updater.start()
    assert updater.check().version == "v2"
    assert updater.current.variant == "edgetpu"
    return registry, state


def test_a_boot_without_the_coral_serves_the_same_version_on_the_cpu(
    tmp_path, tiny_models, monkeypatch
):
    """A missing Edge TPU is hardware, not a bad model: the installed version serves from its
    CPU build (kept beside the Edge TPU build, so offline too), is not rejected, and runs on
    the Coral again once it is back."""
    registry, state = install_on_the_coral(tmp_path, tiny_models, monkeypatch)
    cpu_build = (tiny_models / "tiny_int8.tflite").read_bytes()
    tpu_build = cpu_build + b"\0"

    coral(monkeypatch, plugged=False)
    offline = make_updater(state, str(tmp_path / "no-such-registry"), delegate="edgetpu")
    clf = offline.start()
    assert (clf.version, clf._content) == ("v2", cpu_build)
    assert clf.runtime.delegate is None
    assert offline.rejected == {}
    assert offline.status()["version"] == "v2"
    assert offline.status()["last_known_good"] == "v1"
    saved = json.loads((state / "models" / "state.json").read_text())
    assert saved["current"]["variant"] == "edgetpu"  # unchanged, for when the Coral is back

    coral(monkeypatch, plugged=True)
    back = make_updater(state, registry.uri, delegate="edgetpu")
    clf = back.start()
    assert (clf.version, clf._content) == ("v2", tpu_build)
    assert back.check() is None  # nothing to update, nothing rejected
    assert back.rejected == {}


def test_an_older_edge_tpu_install_without_its_cpu_build(tmp_path, tiny_models, monkeypatch):
    """Installed before the CPU build was kept beside it: without the Coral it is fetched
    from the registry; offline, the last known good serves and the version is not rejected,
    so the next poll installs it again."""
    registry, state = install_on_the_coral(tmp_path, tiny_models, monkeypatch)
    cpu_build = registry.resolve("v2").artifact
    (state / "models" / f"{cpu_build.sha256}.tflite").unlink(missing_ok=True)
    coral(monkeypatch, plugged=False)

    offline = make_updater(state, str(tmp_path / "no-such-registry"), delegate="edgetpu")
    assert offline.start().version == "v1"
    assert "v2" not in offline.rejected

    online = make_updater(state, registry.uri, delegate="edgetpu")
    assert online.start().version == "v1"
    reinstalled = online.check()
    assert reinstalled is not None and reinstalled.version == "v2"
    assert reinstalled._content == (tiny_models / "tiny_int8.tflite").read_bytes()  # the CPU build


STALLING_UPDATE = """
import os, sys, time
from edge.config import ModelConfig
from edge.updater import Updater
real_fsync = os.fsync

def stall(fd):  # the model's write into models/ never finishes: the power cut comes first
    path = os.readlink(f"/proc/self/fd/{fd}")
    if "/models/." in path and ".tflite." in path:
        print("writing", flush=True)
        time.sleep(600)
    real_fsync(fd)

os.fsync = stall
updater = Updater(ModelConfig(registry=sys.argv[1], num_threads=1), sys.argv[2])
print("serving", updater.start().version, flush=True)
updater.check()
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux, as a Pi)")
def test_an_interrupted_model_write_is_cleaned_at_start(tmp_path, edge_registry, tiny_models):
    """Killed while writing the verified model into models/: its temp file (as big as the
    model) is removed at the next start, though nothing is installed then."""
    state = tmp_path / "state"
    assert make_updater(state, edge_registry.uri).start().version == "v1"
    release(edge_registry, tiny_models, "v2")
    process = subprocess.Popen(
        [sys.executable, "-c", STALLING_UPDATE, edge_registry.uri, str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline() == "serving v1\n"
        assert process.stdout.readline() == "writing\n", process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=EDGE_TIMEOUT)
    finally:
        process.kill()
    stale = list((state / "models").glob(".*.tflite.*.tmp"))
    assert stale and stale[0].stat().st_size > 0  # write_atomic's `.<name>.<random>.tmp`

    offline = make_updater(state, str(tmp_path / "no-such-registry"))
    assert offline.start().version == "v1"  # from disk: no install, no state.json written
    assert not list((state / "models").glob(".*.tmp"))
    assert len(list((state / "models").glob("*.tflite"))) == 1


def test_the_heartbeat_says_why_an_update_was_refused(tmp_path, edge_registry, tiny_models):
    from edge.wiring import build_runner
    from tests.edge.test_edge_runner import edge_config

    config = edge_config(tmp_path, edge_registry, actuators=[])
    runner = build_runner(config, once=True)
    updater = runner.updater
    release(edge_registry, tiny_models, "v2", wrong_golden=True)
    assert updater.check() is None
    beat = runner.beat()
    assert beat["model"]["rejected"] == ["v2"]  # the list health consumers read, as before
    refusal = beat["model"]["refusals"]["v2"]
    assert "golden image" in refusal["reason"]
    assert (refusal["attempts"], refusal["final"]) == (1, True)
    assert isinstance(refusal["at"], float)
    assert "refused model v2" in beat["last_error"]  # was None
    assert "refused model v2" in beat["model"]["last_error"]

    # An integrity failure is retried: not yet in `rejected`, but its reason is reported.
    release(edge_registry, tiny_models, "v3")

    def lie(manifest: Manifest) -> None:
        manifest.versions["v3"].artifact.sha256 = "0" * 64

    edit_manifest(edge_registry, lie)
    for _ in range(2):
        assert updater.check() is None
    beat = runner.beat()
    assert beat["model"]["rejected"] == ["v2"]
    assert list(beat["model"]["refusals"]) == ["v3", "v2"]  # newest first
    v3 = beat["model"]["refusals"]["v3"]
    assert (v3["attempts"], v3["final"]) == (2, False)
    assert "sha256" in v3["reason"]
    runner.shutdown()

    # The reasons survive a restart (state.json), and stay few.
    restarted = make_updater(tmp_path / "state", edge_registry.uri)
    assert restarted.status()["refusals"]["v2"]["reason"] == refusal["reason"]
    restarted.rejected.update({f"old{i}": {"attempts": 1, "final": True} for i in range(9)})
    assert len(restarted.status()["refusals"]) == 5
