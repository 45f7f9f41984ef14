"""ASGI middleware: request ids, the stage prefix behind API Gateway, CORS, the limits
(`functions.api.limits`: a body deadline, predictions in flight), and the last line of defence
that turns anything unexpected into a 500 problem, and a client gone mid-upload into nothing.

Plain ASGI rather than `BaseHTTPMiddleware`, so responses stream through untouched and the
request id is in the scope before any route or exception handler runs.
"""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.api import observability as obs
from functions.api.limits import add_limits
from functions.api.model import ModelState
from functions.api.problems import Problem, problem_response
from functions.api.settings import Settings

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:=+/-]{1,128}$")


def add_middleware(app: FastAPI, state: ModelState, settings: Settings) -> None:
    """The request context on every app, around the limits (added first, so they run inside
    it: their problems carry the request id); CORS only where `settings.cors_origins` names
    origins, added last so it wraps the context and answers preflights before it."""
    add_limits(app, state, settings)
    app.add_middleware(RequestContext, state=state)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["content-type", "x-api-key", "x-request-id"],
            expose_headers=["x-request-id"],
            max_age=600,
        )


def _request_id(scope: Scope) -> str:
    event = scope.get("aws.event") or {}
    context_id = (event.get("requestContext") or {}).get("requestId")
    if context_id and _REQUEST_ID.match(str(context_id)):
        return str(context_id)
    lambda_context = scope.get("aws.context")
    if lambda_context is not None and getattr(lambda_context, "aws_request_id", None):
        return str(lambda_context.aws_request_id)
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    return str(uuid.uuid4())


def _stage_prefix(scope: Scope) -> str | None:
    """`/<stage>` when API Gateway (REST) is reached at its stage URL, for the docs' links."""
    context = (scope.get("aws.event") or {}).get("requestContext") or {}
    stage, full_path = context.get("stage"), context.get("path")
    if stage and stage != "$default" and str(full_path or "").startswith(f"/{stage}/"):
        return f"/{stage}"
    return None


class RequestContext:
    """Gives every request an id (API Gateway's, Lambda's, the caller's X-Request-Id, or a
    new one), echoes it as X-Request-Id, sets the root path behind an API Gateway stage, and
    turns anything unexpected into a 500 problem with no traceback in the body (the traceback
    goes to the log, with the id). A client that disconnects before its body arrived is not
    an error of ours: one INFO line (status 499, as nginx logs it), `ClientAborts`, no answer
    (there is no one to answer)."""

    def __init__(self, app: ASGIApp, state: ModelState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        stage = _stage_prefix(scope)
        if stage and not scope.get("root_path"):
            scope["root_path"] = stage  # /docs then loads /<stage>/openapi.json
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            obs.logger.info(
                "client aborted",
                extra={"request_id": request_id, "path": scope.get("path"), "status": 499},
            )
            obs.record_client_abort(self.state.version)
        except Exception:
            obs.logger.exception(
                "unhandled error",
                extra={"request_id": request_id, "path": scope.get("path")},
            )
            obs.record_failure(self.state.version, "internal-error")
            if started:
                raise
            response = problem_response(
                Problem("internal-error", "an unexpected error; the request id is in the logs"),
                instance=scope.get("path"),
                request_id=request_id,
            )
            await response(scope, receive, send_with_id)
