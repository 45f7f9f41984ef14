"""Reading a request: a body that does not arrive within `API_BODY_TIMEOUT_S` gets a 408
problem (and `/health` stays up meanwhile), headers that never finish are closed by the
launcher, and a client that goes away mid-upload is an INFO line and `ClientAborts`, never an
ERROR, a traceback or `PredictionErrors` (the canary alarm's metric)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from functions.api import server as launcher
from functions.api.app import create_app
from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from tests.api.conftest import make_settings
from tests.conftest import ROOT
from wastesort import Classifier

HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
    b"Content-Length: 100000\r\n\r\n"
)


def emf(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on `sock` (read until it closes)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def served(classifier: Classifier) -> Iterator[str]:
    """The app through the launcher, with short limits; yields `host:port`."""
    app = create_app(
        make_settings(body_timeout_s=1.0), classifier=classifier, load_on_startup=False
    )
    with launcher.serving(app, header_timeout_s=1.0, max_header_bytes=8192) as url:
        yield url.removeprefix("http://")


def connect(hostport: str) -> socket.socket:
    host, port = hostport.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


# --- the body: 408 problem ---------------------------------------------------------------------


def test_a_stalled_upload_is_answered_408_and_health_stays_up(served: str, jpeg: bytes):
    stalled = []
    for _ in range(40):
        sock = connect(served)
        sock.sendall(HEAD + jpeg[:1000])  # 1,000 of the 100,000 bytes promised
        stalled.append(sock)
    start = time.monotonic()
    health = httpx.get(f"http://{served}/health", timeout=5)
    assert health.status_code == 200 and time.monotonic() - start < 0.5
    for sock in stalled:
        status, headers, body = read_response(sock, timeout=5)
        assert status == 408
        assert headers["content-type"] == MEDIA_TYPE and headers["connection"] == "close"
        problem = json.loads(body)
        assert problem["type"] == PROBLEM_BASE + "request-timeout" and problem["limit_s"] == 1
        assert problem["request_id"] == headers["x-request-id"]
        sock.close()
    assert time.monotonic() - start < 4  # 1 s allowed, each answered soon after


def test_a_stalled_body_in_the_app_itself(classifier: Classifier, jpeg: bytes, capfd):
    """The deadline is the app's (ASGI), so it holds under any server."""
    app = create_app(
        make_settings(body_timeout_s=0.2), classifier=classifier, load_on_startup=False
    )
    first = True

    async def receive() -> dict:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": jpeg[:100], "more_body": True}
        await asyncio.Event().wait()  # never more
        raise AssertionError("unreachable")

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(asyncio.wait_for(app(scope("/predict"), receive, send), 5))
    assert messages[0]["status"] == 408
    headers = dict(messages[0]["headers"])
    assert headers[b"content-type"] == MEDIA_TYPE.encode() and headers[b"connection"] == b"close"
    assert json.loads(messages[1]["body"])["type"] == PROBLEM_BASE + "request-timeout"
    metrics = emf(capfd.readouterr().out)
    assert any(m.get("error_type") == "request-timeout" and "RejectedInputs" in m for m in metrics)
    assert not any("PredictionErrors" in m for m in metrics)


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


# --- a client that goes away -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_a_client_gone_mid_upload_is_not_a_service_failure(
    classifier: Classifier, jpeg: bytes, capfd, caplog, path: str
):
    app = create_app(make_settings(), classifier=classifier, load_on_startup=False)
    incoming = iter(
        [
            {"type": "http.request", "body": jpeg[:1000], "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict:
        return next(incoming)

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    request = scope(path)
    if path == "/predict/batch":
        request["headers"] = [(b"content-type", b"multipart/form-data; boundary=x")]
    with caplog.at_level(logging.INFO):
        asyncio.run(asyncio.wait_for(app(request, receive, send), 5))
    assert messages == []  # no one to answer, and certainly no 500
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    aborted = [r for r in caplog.records if r.getMessage() == "client aborted"]
    assert len(aborted) == 1 and aborted[0].levelno == logging.INFO
    assert aborted[0].__dict__["status"] == 499 and aborted[0].__dict__["path"] == path
    metrics = emf(capfd.readouterr().out)
    assert sum(1 for m in metrics if "ClientAborts" in m) == 1
    assert not any("PredictionErrors" in m for m in metrics)


def test_a_client_gone_mid_upload_under_uvicorn(served: str, jpeg: bytes, capfd, caplog):
    with caplog.at_level(logging.INFO):
        sock = connect(served)
        sock.sendall(HEAD + jpeg[:1000])
        time.sleep(0.2)
        sock.close()
        deadline = time.monotonic() + 5
        while not any(r.getMessage() == "client aborted" for r in caplog.records):
            assert time.monotonic() < deadline, "the abort was not logged"
            time.sleep(0.02)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert httpx.get(f"http://{served}/health", timeout=5).status_code == 200
    out = capfd.readouterr()
    assert "Traceback" not in out.out + out.err
    metrics = emf(out.out)
    assert any("ClientAborts" in m for m in metrics)
    assert not any("PredictionErrors" in m for m in metrics)


# --- headers: the launcher ---------------------------------------------------------------------


def test_headers_that_never_finish_are_closed(served: str):
    partial, silent = connect(served), connect(served)
    partial.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    start = time.monotonic()
    status, headers, _ = read_response(partial, timeout=5)
    assert status == 408 and headers["content-type"].startswith("text/plain")  # docs/api.md
    assert 0.8 < time.monotonic() - start < 3
    silent.settimeout(5)
    assert silent.recv(100) == b""  # closed without a word (a browser's idle pre-connect)
    partial.close()
    silent.close()


def test_oversized_headers_are_refused(served: str):
    sock = connect(served)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000)
    status, _, _ = read_response(sock, timeout=5)
    assert status == 431
    sock.close()


def test_every_server_setting_is_in_the_one_launcher():
    """`make serve` (so `make demo`), the benchmark and the tests start the same launcher."""
    serve = re.search(r"^serve:.*\n\t(.*)$", (ROOT / "mk/serve.mk").read_text(), re.MULTILINE)
    assert serve and "-m functions.api.server " in serve.group(1)
    assert "functions.api.server" in (ROOT / "bench/serving.py").read_text()
    run = subprocess.run(
        [sys.executable, "-m", "functions.api.server", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--host" in run.stdout and "--port" in run.stdout
    doc = " ".join((ROOT / "docs/api.md").read_text().split())  # says what the launcher does
    assert f"not complete in {launcher.HEADER_TIMEOUT_S:g} s" in doc
    assert f"over {launcher.MAX_HEADER_BYTES // 1024} KiB" in doc
    assert f"({launcher.LIMIT_CONCURRENCY} connections or requests" in doc
