"""RFC 9457 problem details: every error the API answers, with a stable `type` URI per kind.

Clients branch on `type` (never on `detail`, which is for people). The kinds, their status and
title live in `KINDS`, the one table the handlers, the OpenAPI examples and docs/api.md use; the
exception handlers that turn errors into problems live here too, so a status is decided in one
place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from functions.api import observability as obs
from wastesort.errors import WastesortError
from wastesort.validation import field_errors

if TYPE_CHECKING:
    from functions.api.model import ModelState

PROBLEM_BASE = "https://wastesort.dev/problems/"
MEDIA_TYPE = "application/problem+json"
EXAMPLE_REQUEST_ID = "c0ffee00-0000-4000-8000-000000000000"
"""The request id in the OpenAPI examples."""


@dataclass(frozen=True)
class Kind:
    status: int
    title: str


KINDS: dict[str, Kind] = {
    # the image itself (400)
    "empty-image": Kind(400, "The image is empty"),
    "not-an-image": Kind(400, "The bytes are not a JPEG, PNG or WebP image"),
    "corrupt-image": Kind(400, "The image is corrupt or truncated"),
    "too-many-pixels": Kind(400, "The image has too many pixels"),
    "invalid-base64": Kind(400, "image_base64 is not valid base64"),
    "malformed-request": Kind(400, "The request body cannot be parsed"),
    # image URLs (400 refused by policy, 422 could not be fetched)
    "url-input-disabled": Kind(400, "Image URLs are not accepted by this deployment"),
    "url-not-allowed": Kind(400, "The image URL is not allowed"),
    "url-fetch-failed": Kind(422, "The image URL could not be fetched"),
    # size and type
    "payload-too-large": Kind(413, "The request or image is too large"),
    "unsupported-media-type": Kind(415, "Unsupported media type"),
    "content-type-mismatch": Kind(415, "The declared content type does not match the bytes"),
    # shape of the request
    "validation-error": Kind(422, "The request is not valid"),
    "too-many-images": Kind(422, "Too many images in one request"),
    "not-found": Kind(404, "Not found"),
    "method-not-allowed": Kind(405, "Method not allowed"),
    "request-timeout": Kind(408, "The request body did not arrive in time"),
    # feedback on captures
    "unknown-capture": Kind(404, "No capture has this id"),
    "unknown-label": Kind(422, "The label is not one of the model's classes or not_waste"),
    "capture-off": Kind(409, "This deployment does not capture images"),
    "capture-unavailable": Kind(503, "The capture store cannot be reached; retry later"),
    # reviewing captures (admin endpoints)
    "unauthorized": Kind(401, "An admin key is needed"),
    "forbidden": Kind(403, "This key may not review captures"),
    # the server
    "model-unavailable": Kind(503, "The model is not loaded"),
    "overloaded": Kind(503, "The server is busy; retry after the Retry-After seconds"),
    "internal-error": Kind(500, "Internal server error"),
}

# wastesort error codes -> problem kinds (anything else that is an ImageError: corrupt-image).
CORE_CODES = {
    "empty_image": "empty-image",
    "unsupported_format": "not-an-image",
    "corrupt_image": "corrupt-image",
    "too_many_pixels": "too-many-pixels",
    "invalid_image": "corrupt-image",
}


def type_uri(kind: str) -> str:
    return PROBLEM_BASE + kind


class Problem(Exception):  # noqa: N818 - a problem document, raised
    """Raise anywhere in a request to answer `application/problem+json`.

    Args:
        kind: a key of `KINDS`; gives the status, the title and the `type` URI.
        detail: what went wrong with this request, for a person to read.
        **extra: extension members (e.g. `limit`, `errors`), JSON-serialisable.
    """

    def __init__(self, kind: str, detail: str | None = None, **extra: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        super().__init__(detail or KINDS[kind].title)
        self.kind = kind
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return KINDS[self.kind].status

    @classmethod
    def from_core(cls, exc: WastesortError) -> Problem:
        """A problem for an error the core raised about an input image."""
        return cls(CORE_CODES.get(exc.code, "corrupt-image"), exc.message, code=exc.code)

    @classmethod
    def from_validation(cls, exc: ValidationError, *, what: str = "the JSON body") -> Problem:
        """A validation-error problem: `detail` is the one line `wastesort.validation` words
        for every pydantic error (without the values: they are the caller's request body),
        `errors` the machine-readable list."""
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        detail = f"{what} is not valid: " + "; ".join(field_errors(exc, with_input=False))
        return cls("validation-error", detail, errors=errors)

    def body(self, *, instance: str | None = None, request_id: str | None = None) -> dict:
        kind = KINDS[self.kind]
        body: dict[str, Any] = {"type": type_uri(self.kind), "title": kind.title}
        body["status"] = kind.status
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if request_id:
            body["request_id"] = request_id
        body.update(self.extra)
        return body


def problem_response(
    problem: Problem,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=instance, request_id=request_id),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def example(kind: str, detail: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI example of one problem (used by the route declarations)."""
    return {
        "summary": KINDS[kind].title,
        "value": Problem(kind, detail, **extra).body(
            instance="/predict", request_id=EXAMPLE_REQUEST_ID
        ),
    }


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}


def responses(*kinds_with_detail: tuple[str, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these problem kinds, grouped by status, each with an example."""
    out: dict[int | str, dict[str, Any]] = {}
    for kind, detail in kinds_with_detail:
        status = KINDS[kind].status
        entry = out.setdefault(
            status,
            {
                "description": KINDS[kind].title,
                "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA, "examples": {}}},
            },
        )
        entry["content"][MEDIA_TYPE]["examples"][kind] = example(kind, detail)
    return out


# --- the exception handlers ------------------------------------------------------------------


def add_error_handlers(app: FastAPI, state: ModelState) -> None:
    """Answer every error as a problem, logged, and counted: 4xx as `RejectedInputs` (the
    caller's fault; 404/405 are not inputs), 5xx as `PredictionErrors` (what the canary alarm
    rolls back on)."""

    def respond(request: Request, problem: Problem, headers: dict[str, str] | None = None) -> Any:
        request_id = getattr(request.state, "request_id", None)
        log = obs.logger.warning if problem.status < 500 else obs.logger.error
        log(
            "problem",
            extra={
                "request_id": request_id,
                "model_version": state.version,
                "type": problem.kind,
                "status": problem.status,
                "detail": problem.detail,
                "path": request.url.path,
            },
        )
        if problem.kind == "capture-unavailable":  # no prediction failed: not for the canary
            obs.record_capture_failure(state.version)
        elif problem.status >= 500:
            obs.record_failure(state.version, problem.kind)
        elif problem.kind not in ("not-found", "method-not-allowed"):
            obs.record_rejected(state.version, problem.kind)
        if problem.kind in ("model-unavailable", "capture-unavailable"):
            headers = {**(headers or {}), "Retry-After": "5"}
        return problem_response(
            problem, instance=request.url.path, request_id=request_id, headers=headers
        )

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Any:
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Any:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return respond(
            request, Problem("validation-error", "the request is not valid", errors=errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Any:
        kind = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "malformed-request" if exc.status_code < 500 else "internal-error"
        )
        return respond(request, Problem(kind, str(exc.detail)), headers=exc.headers)
