"""Overload: predictions beyond the limit in flight (`API_MAX_IN_FLIGHT` running plus
`API_MAX_QUEUE` waiting) are shed at once with a 503 `overloaded` problem and `Retry-After`,
counted as `ShedRequests` (never `PredictionErrors`), while `/health` keeps answering; a slow
upload holds no slot; `API_MAX_IN_FLIGHT=0` turns the limit off."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from functions.api import limits
from functions.api import server as launcher
from functions.api.app import create_app
from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from tests.api.conftest import make_settings
from wastesort import Classifier

SCOPE = {  # a raw `POST /predict` of a JPEG, for tests that drive the ASGI app by hand
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/predict",
    "raw_path": b"/predict",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"content-type", b"image/jpeg")],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 80),
}


class Gated:
    """The tiny classifier, but every prediction waits for `gate` (so tests can hold
    predictions in flight); `entered` counts those that reached the model."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.entered += 1
        assert self.gate.wait(20), "the test never opened the gate"
        return self.inner.predict(*args, **kwargs)


@pytest.fixture
def gated(classifier: Classifier) -> Iterator[Gated]:
    gated = Gated(classifier)
    yield gated
    gated.gate.set()  # never leave a worker thread waiting


def asgi_client(model: Any, **settings: Any) -> httpx.AsyncClient:
    app = create_app(make_settings(**settings), classifier=model, load_on_startup=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def emf(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def shed_counts(out: str) -> list[int]:
    """The `ShedRequests` of each EMF line that has one (a value, or a list of values)."""
    values = [m["ShedRequests"] for m in emf(out) if "ShedRequests" in m]
    return [int(sum(v)) if isinstance(v, list) else int(v) for v in values]


def assert_overloaded(response: httpx.Response, capacity: int) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["type"] == PROBLEM_BASE + "overloaded" and body["status"] == 503
    assert body["limit"] == capacity and body["request_id"] == response.headers["x-request-id"]


def post(client: httpx.AsyncClient, jpeg: bytes) -> Any:
    return client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"})


@pytest.fixture
def quick_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SHED_REPORT_S", 0.2)


@pytest.mark.usefixtures("quick_reports")
@pytest.mark.parametrize(
    ("settings", "capacity"),
    [
        ({"max_in_flight": 1, "max_queue": 0}, 1),
        ({"max_in_flight": 1, "max_queue": 2}, 3),
        ({"pool_size": 2, "max_queue": 1}, 3),  # default in flight: one per interpreter
    ],
)
def test_predictions_over_the_limit_are_shed_with_a_problem(
    gated: Gated, jpeg: bytes, capfd, settings: dict, capacity: int
):
    async def scenario() -> None:
        async with asgi_client(gated, **settings) as client:
            admitted = [asyncio.create_task(post(client, jpeg)) for _ in range(capacity)]
            await until(lambda: gated.entered == capacity)
            shed = await asyncio.wait_for(post(client, jpeg), 5)
            assert_overloaded(shed, capacity)
            batch = await asyncio.wait_for(
                client.post("/predict/batch", files=[("files", ("a.jpg", jpeg, "image/jpeg"))]),
                5,
            )
            assert_overloaded(batch, capacity)
            health = await asyncio.wait_for(client.get("/health"), 5)  # not limited
            assert health.status_code == 200
            gated.gate.set()
            assert [r.status_code for r in await asyncio.gather(*admitted)] == [200] * capacity
            assert (await post(client, jpeg)).status_code == 200  # the slots came back
            await asyncio.sleep(limits.SHED_REPORT_S + 0.2)  # the second shed's report

    asyncio.run(scenario())
    out = capfd.readouterr().out
    assert sum(shed_counts(out)) == 2
    assert not any("PredictionErrors" in m for m in emf(out))  # load is not a failure


def test_shed_requests_are_reported_once_per_interval(gated: Gated, jpeg: bytes, capfd, caplog):
    """A line and a metric per 503 would cost more than the 503: the first of a burst is
    reported at once, the rest together a second later."""

    async def scenario() -> None:
        async with asgi_client(gated, max_in_flight=1, max_queue=0) as client:
            running = asyncio.create_task(post(client, jpeg))
            await until(lambda: gated.entered == 1)
            for _ in range(30):
                assert (await post(client, jpeg)).status_code == 503
            assert shed_counts(capfd.readouterr().out) == [1]
            await asyncio.sleep(limits.SHED_REPORT_S + 0.2)
            gated.gate.set()
            assert (await running).status_code == 200

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    later = shed_counts(capfd.readouterr().out)
    assert 1 + sum(later) == 30 and len(later) <= 2
    lines = [r for r in caplog.records if r.getMessage() == "shed"]
    assert sum(r.__dict__["count"] for r in lines) == 30 and len(lines) <= 3
    assert {r.levelno for r in lines} == {logging.WARNING}


def test_max_in_flight_0_turns_the_limit_off(gated: Gated, jpeg: bytes):
    async def scenario() -> None:
        async with asgi_client(gated, max_in_flight=0, max_queue=0) as client:
            tasks = [asyncio.create_task(post(client, jpeg)) for _ in range(4)]
            await until(lambda: gated.entered == 4)  # all four reached the model
            gated.gate.set()
            assert [r.status_code for r in await asyncio.gather(*tasks)] == [200] * 4

    asyncio.run(scenario())


def test_a_slow_upload_holds_no_slot(classifier: Classifier, jpeg: bytes):
    """The slot is taken when the body has arrived: a stalled upload does not shed others."""
    app = create_app(
        make_settings(max_in_flight=1, max_queue=0), classifier=classifier, load_on_startup=False
    )
    rest = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": jpeg[:100], "more_body": True}
        await rest.wait()
        return {"type": "http.request", "body": jpeg[100:], "more_body": False}

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    async def scenario() -> None:
        slow = asyncio.create_task(app(SCOPE, receive, send))
        await until(lambda: bool(sent))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as client:
            assert (await asyncio.wait_for(post(client, jpeg), 10)).status_code == 200
        rest.set()
        await asyncio.wait_for(slow, 10)

    asyncio.run(scenario())
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200


def test_a_request_arriving_when_full_is_shed_before_its_body_is_read(gated: Gated, jpeg: bytes):
    app = create_app(
        make_settings(max_in_flight=1, max_queue=0), classifier=gated, load_on_startup=False
    )
    received: list[dict] = []

    async def receive() -> dict:
        received.append({})
        return {"type": "http.request", "body": jpeg, "more_body": False}

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    async def scenario() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as client:
            running = asyncio.create_task(post(client, jpeg))
            await until(lambda: gated.entered == 1)
            await asyncio.wait_for(app(SCOPE, receive, send), 5)
            wrong_method = await client.get("/predict")  # not a prediction: not limited
            assert wrong_method.status_code == 405
            gated.gate.set()
            assert (await running).status_code == 200

    asyncio.run(scenario())
    assert received == []  # answered without reading the upload
    assert messages[0]["status"] == 503
    assert json.loads(messages[1]["body"])["type"] == PROBLEM_BASE + "overloaded"


def test_under_uvicorn_overload_answers_problems_and_health_stays_up(gated: Gated, jpeg: bytes):
    """Through the launcher, 12 clients at once against 2 slots: 2 answered, 10 shed as
    problems (not uvicorn's bare text/plain 503), and /health answers meanwhile."""
    app = create_app(
        make_settings(max_in_flight=1, max_queue=1), classifier=gated, load_on_startup=False
    )
    with launcher.serving(app) as url, concurrent.futures.ThreadPoolExecutor(12) as pool:

        def one(_: int) -> httpx.Response:
            return httpx.post(
                f"{url}/predict", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=30
            )

        futures = [pool.submit(one, i) for i in range(12)]
        deadline = time.monotonic() + 10
        while sum(f.done() for f in futures) < 10:
            assert time.monotonic() < deadline, "the overflow was not shed"
            time.sleep(0.02)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert gated.entered == 2  # the two admitted, and no other
        gated.gate.set()
        answers = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 2 + [503] * 10
    for response in answers:
        if response.status_code == 503:
            assert_overloaded(response, 2)
