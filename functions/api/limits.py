"""Limits on what one request may cost the server: its body must arrive in time, and only so
many predictions run or wait at once.

Both are plain ASGI middleware around `receive()`, inside the request context (so answers carry
the request id) and outside the routes (so no route can forget them):

- `BodyDeadline`: the whole body within `body_timeout_s`, else 408 `request-timeout` and the
  connection closed. uvicorn has no body-read timeout of its own; a stalled upload otherwise
  holds its connection forever. Headers that never finish are the launcher's job
  (`functions.api.server`).
- `PredictionLimit`: a prediction takes a slot when its body has fully arrived (so a slow
  upload holds none) and gives it back when its answer is sent. `max_in_flight` run (one per
  interpreter by default) and `max_queue` wait; the rest are shed at once with 503
  `overloaded` and `Retry-After`, counted as `ShedRequests`, rather than queueing until every
  answer is late. A request that arrives while every slot is taken is shed before its body is
  read (the cheapest answer, and the client need not finish its upload). Only the prediction
  routes are limited: `/health` stays quick under load.

On Lambda (one request per sandbox, the body already in the event) neither ever fires.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.api import observability as obs
from functions.api.problems import Problem, problem_response

if TYPE_CHECKING:
    from fastapi import FastAPI

    from functions.api.model import ModelState
    from functions.api.settings import Settings

PREDICTION_PATHS = frozenset({"/predict", "/predict/batch"})
RETRY_AFTER_S = 1
"""What a shed request is told to wait: one prediction takes milliseconds, so a slot is free
again long before; the second is the smallest `Retry-After` can say."""
SHED_REPORT_S = 1.0
"""Shed requests are logged and counted (`ShedRequests`) at most once per this many seconds,
the first of a burst at once: a line and a metric per 503 cost more than the 503 itself, and
clients that ignore `Retry-After` can send thousands a second. (A count not yet reported when
the server stops is lost: at most this long's worth.)"""


def add_limits(app: FastAPI, state: ModelState, settings: Settings) -> None:
    """The body deadline on every request, and the prediction limit unless turned off
    (`max_in_flight=0`). Added before the request context, so they run inside it."""
    in_flight = settings.max_in_flight
    if in_flight is None:
        in_flight = settings.pool_size
    if in_flight > 0:
        app.add_middleware(PredictionLimit, state=state, capacity=in_flight + settings.max_queue)
    app.add_middleware(BodyDeadline, state=state, timeout_s=settings.body_timeout_s)


class _TooSlow(Exception):  # noqa: N818 - raised out of receive(), caught by BodyDeadline
    """The body's deadline passed: stops the route; `BodyDeadline` answers."""


class _Full(Exception):  # noqa: N818 - raised out of receive(), caught by PredictionLimit
    """No slot when the body arrived: stops the route; `PredictionLimit` answers."""


def _route_path(scope: Scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path") or ""
    return path[len(root) :] if root and path.startswith(root + "/") else path


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    problem: Problem,
    headers: dict[str, str],
) -> None:
    request_id = (scope.get("state") or {}).get("request_id")
    response = problem_response(
        problem, instance=scope.get("path"), request_id=request_id, headers=headers
    )
    await response(scope, receive, send)


def _started(send: Send) -> tuple[Send, list[bool]]:
    """`send` that remembers whether the response has started (then no problem can follow)."""
    started = [False]

    async def tracking(message: Message) -> None:
        if message["type"] == "http.response.start":
            started[0] = True
        await send(message)

    return tracking, started


class BodyDeadline:
    """Answers 408 `request-timeout` (and closes the connection) when the request body has not
    fully arrived `timeout_s` after the request began."""

    def __init__(self, app: ASGIApp, state: ModelState, timeout_s: float) -> None:
        self.app = app
        self.state = state
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() only waits for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _TooSlow from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        send, started = _started(send)
        try:
            await self.app(scope, receive_in_time, send)
        except _TooSlow:
            obs.logger.warning(
                "problem",
                extra={
                    "request_id": (scope.get("state") or {}).get("request_id"),
                    "model_version": self.state.version,
                    "type": "request-timeout",
                    "status": 408,
                    "path": scope.get("path"),
                },
            )
            obs.record_rejected(self.state.version, "request-timeout")
            if started[0]:
                raise
            problem = Problem(
                "request-timeout",
                f"the body did not arrive within {self.timeout_s:g} s",
                limit_s=self.timeout_s,
            )
            await _answer(scope, receive, send, problem, {"Connection": "close"})


class PredictionLimit:
    """At most `capacity` predictions admitted at once (running or waiting for an
    interpreter); one more is shed with 503 `overloaded` and `Retry-After`.

    A try-acquire, never a wait: the event loop is single-threaded, so a plain counter is the
    semaphore. The slot is taken when the body's last chunk is received, and given back when
    the route returns. Only `POST` to the prediction routes counts.
    """

    def __init__(self, app: ASGIApp, state: ModelState, capacity: int) -> None:
        self.app = app
        self.state = state
        self.capacity = capacity
        self.in_flight = 0
        self._unreported = 0
        self._quiet_until = 0.0  # time.monotonic() before which the next report waits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or _route_path(scope) not in PREDICTION_PATHS
        ):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.capacity:  # full already: shed before any work (or upload)
            await self._shed(scope, receive, send)
            return
        held = False

        async def receive_then_admit() -> Message:
            nonlocal held
            message = await receive()
            last = message["type"] == "http.request" and not message.get("more_body", False)
            if last and not held:
                if self.in_flight >= self.capacity:
                    raise _Full
                self.in_flight += 1
                held = True
            return message

        try:
            await self.app(scope, receive_then_admit, send)
        except _Full:  # raised before the route could answer anything
            await self._shed(scope, receive, send)
        finally:
            if held:
                self.in_flight -= 1

    async def _shed(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._unreported += 1
        if time.monotonic() >= self._quiet_until:  # the first of a burst: reported at once
            self._report_shed()
        problem = Problem(
            "overloaded",
            f"{self.capacity} predictions are already running or waiting; retry shortly",
            limit=self.capacity,
        )
        await _answer(scope, receive, send, problem, {"Retry-After": str(RETRY_AFTER_S)})

    def _report_shed(self) -> None:
        """Log and count the requests shed since the last report; look again in SHED_REPORT_S
        (if that timer is lost with its event loop, the next shed request reports them)."""
        if not self._unreported:
            return
        count, self._unreported = self._unreported, 0
        obs.logger.warning(
            "shed",
            extra={
                "count": count,
                "capacity": self.capacity,
                "in_flight": self.in_flight,
                "model_version": self.state.version,
            },
        )
        obs.record_shed(self.state.version, count)
        self._quiet_until = time.monotonic() + SHED_REPORT_S
        asyncio.get_running_loop().call_later(SHED_REPORT_S, self._report_shed)
