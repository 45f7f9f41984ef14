"""Fixtures for the edge runner: the tiny model without TensorFlow in this process (the Pi-like
venv has none), registries whose golden sets match what the tiny model really answers, an
HTTP registry server that can stall or corrupt a download, and gpiozero's mock pins."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT, sample_bytes, tiny_fields
from wastesort import Classifier
from wastesort.manifest import ArtifactRef, InputSpec, ModelEntry, OutputSpec
from wastesort.registry import GoldenSample, Registry

TINY_ENV = "WASTESORT_TINY_MODELS"
"""A folder holding tiny_int8.tflite and tiny_float.tflite, built once by the main venv
(`make test-pi` sets it); without it the models are built here with TensorFlow."""

EDGE_TIMEOUT = 60


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Overrides the core fixture so that a venv without TensorFlow can run these tests: the
    models come from WASTESORT_TINY_MODELS, else from build/tiny-models (built once, by this
    interpreter if it has TensorFlow, else by the main venv's, and rebuilt when
    tests/tiny_model.py changes)."""
    prebuilt = os.environ.get(TINY_ENV)
    if prebuilt and (Path(prebuilt) / "tiny_int8.tflite").exists():
        return Path(prebuilt)
    shared = ROOT / "build" / "tiny-models"
    script = ROOT / "tests" / "tiny_model.py"
    fresh = [
        shared / "named" / "tiny_int8.tflite",
        shared / "tiny_int8.tflite",
        shared / "tiny_float.tflite",
    ]
    if all(f.exists() and f.stat().st_mtime >= script.stat().st_mtime for f in fresh):
        return shared
    python = sys.executable
    probe = subprocess.run([python, "-c", "import tensorflow"], capture_output=True, check=False)
    if probe.returncode != 0:
        python = str(ROOT / ".venv" / "bin" / "python")
        if not Path(python).exists():
            pytest.skip(f"no TensorFlow to build the tiny model; set {TINY_ENV}")
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([python, str(script), str(out)], check=True, capture_output=True)
    (shared / "named").mkdir(parents=True, exist_ok=True)
    # The int8 model last: it marks "complete" (the Pi-like venv's core tests read named/ too).
    for name in ("named/tiny_int8.tflite", "tiny_float.tflite", "tiny_int8.tflite"):
        staged = shared / f"{name}.{os.getpid()}.tmp"
        shutil.copyfile(out / name, staged)
        os.replace(staged, shared / name)
    return shared


def float_fields(**overrides: object) -> dict:
    fields = tiny_fields(
        input=InputSpec(height=48, width=64, dtype="float32"),
        output=OutputSpec(kind="logits", dtype="float32"),
    )
    fields.update(overrides)
    return fields


def golden_for(model: Path, fields: dict, *, wrong: bool = False) -> list[GoldenSample]:
    """A golden set with what `model` really says for the glass sample (or, with `wrong`,
    another class: a self-test that must fail)."""
    content = model.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    entry = ModelEntry(
        version="probe",
        artifact=ArtifactRef(path="m.tflite", sha256=digest, size=len(content)),
        **fields,
    )
    prediction = Classifier(content, entry).predict(sample_bytes("glass"))
    expected = prediction.predicted_class
    if wrong:
        expected = next(label for label in entry.labels if label != expected)
    return [GoldenSample("glass.jpg", sample_bytes("glass"), expected, prediction.all_confidences)]


def publish(
    registry: Registry,
    model: Path,
    version: str,
    *,
    float_model: bool = False,
    wrong_golden: bool = False,
    **kwargs: object,
) -> None:
    fields = float_fields() if float_model else tiny_fields()
    registry.publish(
        model,
        version=version,
        golden=golden_for(model, fields, wrong=wrong_golden),
        **fields,
        **kwargs,
    )


@pytest.fixture
def edge_registry(tmp_path: Path, tiny_int8: Path) -> Registry:
    """A local registry: `v1` (the int8 tiny model) behind `production`."""
    registry = Registry.from_uri(tmp_path / "registry", cache_dir=tmp_path / "publish-cache")
    publish(registry, tiny_int8, "v1", aliases=["production"])
    return registry


class RegistryServer:
    """Serves a registry folder over HTTP; can stall or corrupt chosen downloads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stall: str | None = None
        self.corrupt: str | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                path = (server.root / self.path.lstrip("/")).resolve()
                if not path.is_file() or not path.is_relative_to(server.root.resolve()):
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if server.corrupt and server.corrupt in self.path:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if server.stall and server.stall in self.path:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    server.stalled.set()
                    server.release.wait(EDGE_TIMEOUT)
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def registry_server(edge_registry: Registry) -> Iterator[RegistryServer]:
    server = RegistryServer(Path(edge_registry.uri))
    yield server
    server.close()


@pytest.fixture
def pins() -> Iterator[object]:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    factory = MockFactory(pin_class=MockPWMPin)
    previous = Device.pin_factory
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = previous
