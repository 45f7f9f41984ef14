"""The FastAPI app: `/predict`, `/predict/batch`, `/health`, `/model/info`.

`create_app()` builds it; the module-level `app` is what uvicorn serves (`make serve`) and what
`functions.api.handler` wraps for Lambda. Every error is `application/problem+json`
(`functions.api.problems`); nothing unexpected leaks a traceback.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.api import observability as obs
from functions.api.fetch import Fetcher
from functions.api.inputs import (
    SERVED_TYPES,
    BatchRequest,
    ImageRef,
    PredictRequest,
    check_image,
    parse_batch,
    parse_single,
)
from functions.api.model import ModelState
from functions.api.problems import (
    MEDIA_TYPE,
    Problem,
    problem_response,
    responses,
)
from functions.api.settings import MAX_BODY_BYTES, Settings
from wastesort import Classifier, __version__
from wastesort.errors import ImageError

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:=+/-]{1,128}$")
EXAMPLE_ID = "c0ffee00-0000-4000-8000-000000000000"


# --- response models (the OpenAPI schema) ----------------------------------------------------


class PredictResponse(BaseModel):
    predicted_class: str = Field(examples=["glass"])
    confidence: float = Field(examples=[0.93])
    all_confidences: dict[str, float] = Field(
        description="class -> probability, highest first (the K best with top_k)"
    )
    decision: str = Field(
        description="predicted_class, or `uncertain` below the model's recorded threshold"
    )
    model_version: str
    latency_ms: float = Field(description="time spent in the API for this request")
    request_id: str


class BatchItem(BaseModel):
    index: int
    status: int = Field(description="200, or the status of this item's problem")
    predicted_class: str | None = None
    confidence: float | None = None
    all_confidences: dict[str, float] | None = None
    decision: str | None = None
    problem: dict[str, Any] | None = Field(default=None, description="RFC 9457 problem")


class BatchResponse(BaseModel):
    results: list[BatchItem]
    succeeded: int
    failed: int
    model_version: str
    latency_ms: float
    request_id: str


class HealthResponse(BaseModel):
    status: str = "ok"
    model_version: str
    sha256: str
    runtime: dict[str, Any]
    uptime_s: float
    load_ms: float | None = None


PREDICTION_EXAMPLE = {
    "predicted_class": "glass",
    "confidence": 0.931,
    "all_confidences": {
        "glass": 0.931,
        "plastic": 0.041,
        "metal": 0.013,
        "paper": 0.008,
        "cardboard": 0.005,
        "trash": 0.002,
    },
    "decision": "glass",
    "model_version": "v20261123-abc123",
    "latency_ms": 11.8,
    "request_id": EXAMPLE_ID,
}

BATCH_EXAMPLE = {
    "results": [
        {
            "index": 0,
            "status": 200,
            **{
                k: PREDICTION_EXAMPLE[k]
                for k in ("predicted_class", "confidence", "all_confidences", "decision")
            },
            "problem": None,
        },
        {
            "index": 1,
            "status": 400,
            "predicted_class": None,
            "confidence": None,
            "all_confidences": None,
            "decision": None,
            "problem": {
                "type": "https://wastesort.dev/problems/corrupt-image",
                "title": "The image is corrupt or truncated",
                "status": 400,
                "detail": "the image data is corrupt or truncated",
                "instance": "/predict/batch#1",
            },
        },
    ],
    "succeeded": 1,
    "failed": 1,
    "model_version": "v20261123-abc123",
    "latency_ms": 23.4,
    "request_id": EXAMPLE_ID,
}
HEALTH_EXAMPLE = {
    "status": "ok",
    "model_version": "v20261123-abc123",
    "sha256": "4e2639510a32780450f88175b1dcc7f0bd5f376f5f27765c540945218118de1e",
    "runtime": {"name": "ai-edge-litert", "version": "2.3.0", "num_threads": 2, "delegate": None},
    "uptime_s": 42.5,
    "load_ms": 231.0,
}
INFO_EXAMPLE = {
    "version": "v20261123-abc123",
    "labels": ["cardboard", "glass", "metal", "paper", "plastic", "trash"],
    "input": {
        "height": 256,
        "width": 192,
        "channels": 3,
        "dtype": "uint8",
        "scale": 1.0,
        "zero_point": 0,
        "resize": "squash",
        "resample": "bilinear",
    },
    "metrics": {"accuracy": 0.93, "macro_f1": 0.92},
    "created_at": "2026-11-23T19:30:00Z",
    "temperature": 1.4,
    "uncertain_threshold": 0.55,
    "sha256": "4e2639510a32780450f88175b1dcc7f0bd5f376f5f27765c540945218118de1e",
}


def ok(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": example}}}}


IMAGE_PROBLEMS = (
    ("empty-image", "the image is empty (0 bytes)"),
    ("not-an-image", "the bytes are not a JPEG, PNG or WebP image"),
    ("corrupt-image", "the image data is corrupt or truncated: image file is truncated"),
    ("too-many-pixels", "the image has 10000x5000 = 50,000,000 pixels; the limit is 40,000,000"),
    ("invalid-base64", "image_base64 is not valid base64"),
    ("malformed-request", "the body is not valid JSON"),
    ("url-input-disabled", "this deployment does not fetch image URLs"),
    ("url-not-allowed", "host 'images.example.com' resolves to a loopback address"),
    ("payload-too-large", f"the body is over {MAX_BODY_BYTES:,} bytes"),
    ("unsupported-media-type", "text/plain is not served; send image/jpeg, image/png, image/webp"),
    ("content-type-mismatch", "declared image/png but the bytes are image/jpeg"),
    ("url-fetch-failed", "images.example.com answered HTTP 404"),
    ("validation-error", "the JSON body is not valid"),
    ("model-unavailable", "the model is still loading"),
    ("internal-error", "an unexpected error; the request id is in the logs"),
)


def _request_body(batch: bool, batch_max: int) -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    if batch:
        multipart = {
            "type": "object",
            "properties": {
                "files": {"type": "array", "items": binary, "maxItems": batch_max},
                "top_k": {"type": "integer", "minimum": 1},
            },
            "required": ["files"],
        }
        schema = BatchRequest.model_json_schema()
        schema["properties"]["images"] = {
            "type": "array",
            "items": ImageRef.model_json_schema(),
            "minItems": 1,
            "maxItems": batch_max,
        }
        schema.pop("$defs", None)
        json_examples = {
            "mixed": {
                "summary": "inline images",
                "value": {"images": [{"image_base64": "/9j/4AAQSkZJRg..."}], "top_k": 3},
            }
        }
        content: dict[str, Any] = {
            "multipart/form-data": {"schema": multipart},
            "application/json": {"schema": schema, "examples": json_examples},
        }
    else:
        multipart = {
            "type": "object",
            "properties": {"file": binary, "top_k": {"type": "integer", "minimum": 1}},
            "required": ["file"],
        }
        content = {
            "multipart/form-data": {"schema": multipart},
            **{kind: {"schema": binary} for kind in SERVED_TYPES},
            "application/json": {
                "schema": PredictRequest.model_json_schema(),
                "examples": {
                    "base64": {
                        "summary": "an inline image",
                        "value": {"image_base64": "/9j/4AAQSkZJRgABAQ...", "top_k": 3},
                    },
                    "url": {
                        "summary": "an image URL (allow-listed hosts only)",
                        "value": {"image_url": "https://images.example.com/bottle.jpg"},
                    },
                },
            },
        }
    return {"requestBody": {"required": True, "content": content}}


# --- request context: request ids, and the last line of defence -------------------------------


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
    goes to the log, with the id)."""

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


# --- the app ---------------------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    *,
    classifier: Classifier | None = None,
    fetcher: Fetcher | None = None,
    load_on_startup: bool = True,
) -> FastAPI:
    """Build the API.

    Args:
        settings: configuration; default from the environment.
        classifier: serve this already loaded model instead of loading `settings.model_uri`.
        fetcher: how image URLs are fetched (tests pass one over a mock transport).
        load_on_startup: load the model in the ASGI lifespan startup (uvicorn). The Lambda
            handler loads it at init instead and runs Mangum without lifespan.
    """
    settings = settings or Settings()
    state = ModelState(settings, classifier)
    fetcher = fetcher or Fetcher(
        settings.url_allowlist,
        max_bytes=settings.url_max_bytes,
        connect_timeout=settings.url_connect_timeout_s,
        read_timeout=settings.url_read_timeout_s,
        total_timeout=settings.url_total_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if load_on_startup and not state.loaded:
            await run_in_threadpool(state.load)
        yield

    app = FastAPI(
        title="wastesort",
        version=__version__,
        summary="Classify a photo of waste into its bin.",
        description=(
            "Send a photo (multipart `file`, a raw `image/*` body, or JSON `image_base64` / "
            "`image_url`) and get the waste class. Errors are `application/problem+json` "
            "(RFC 9457) with a stable `type` per kind; see docs/api.md."
        ),
        lifespan=lifespan,
    )
    app.state.model = state
    app.state.settings = settings
    app.state.fetcher = fetcher
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
    _add_error_handlers(app, state)

    _add_routes(app, state, settings, fetcher)
    return app


def _ready(state: ModelState) -> Any:
    async def ready() -> Classifier:
        if not state.loaded and state.retry_due():
            await run_in_threadpool(state.load)
        return state.require()

    return ready


def _add_routes(app: FastAPI, state: ModelState, settings: Settings, fetcher: Fetcher) -> None:
    _add_predict(app, state, settings, fetcher)
    _add_batch(app, state, settings, fetcher)
    _add_status(app, state)


def _add_predict(app: FastAPI, state: ModelState, settings: Settings, fetcher: Fetcher) -> None:
    ready = _ready(state)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        summary="Classify one image",
        responses=ok(PREDICTION_EXAMPLE) | responses(*IMAGE_PROBLEMS),
        openapi_extra=_request_body(batch=False, batch_max=settings.batch_max),
    )
    async def predict(request: Request) -> PredictResponse:
        start = time.perf_counter()
        clf = await ready()
        image, top_k = await parse_single(request, limit=settings.max_body_bytes, fetcher=fetcher)
        if image.problem is not None:
            raise image.problem
        check_image(image.data, image.declared_type)
        try:
            with obs.subsegment("predict", model_version=clf.version):
                prediction = await run_in_threadpool(
                    clf.predict, image.data, top_k=top_k or settings.default_top_k
                )
        except ImageError as exc:
            raise Problem.from_core(exc) from None
        latency_ms = round((time.perf_counter() - start) * 1000, 2)
        request_id = request.state.request_id
        obs.record_predictions(clf.version, [prediction], latency_ms)
        obs.logger.info(
            "prediction",
            extra={
                "request_id": request_id,
                "model_version": clf.version,
                "predicted_class": prediction.predicted_class,
                "confidence": prediction.confidence,
                "decision": prediction.decision,
                "latency_ms": latency_ms,
                "source": image.source if image.source.startswith("https://") else None,
                "bytes": len(image.data),
            },
        )
        return PredictResponse(**prediction.to_dict(), latency_ms=latency_ms, request_id=request_id)


def _add_batch(app: FastAPI, state: ModelState, settings: Settings, fetcher: Fetcher) -> None:
    ready = _ready(state)

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        summary="Classify several images; each bad one gets its own problem",
        responses=ok(BATCH_EXAMPLE)
        | responses(
            ("too-many-images", f"at most {settings.batch_max} images"),
            ("payload-too-large", f"the body is over {settings.max_body_bytes:,} bytes"),
            ("unsupported-media-type", "a batch is multipart (`files`) or JSON (`images`)"),
            ("validation-error", "the JSON body is not valid"),
            ("model-unavailable", "the model is still loading"),
        ),
        openapi_extra=_request_body(batch=True, batch_max=settings.batch_max),
    )
    async def predict_batch(request: Request) -> BatchResponse:
        start = time.perf_counter()
        clf = await ready()
        images, top_k = await parse_batch(
            request,
            limit=settings.max_body_bytes,
            batch_max=settings.batch_max,
            fetcher=fetcher,
        )
        outcome: list[Any] = []
        good: list[bytes] = []
        for image in images:
            try:
                if image.problem is not None:
                    raise image.problem
                check_image(image.data, image.declared_type)
                outcome.append(None)
                good.append(image.data)
            except Problem as problem:
                outcome.append(problem)
        if good:
            with obs.subsegment("predict_batch", model_version=clf.version):
                answers = iter(
                    await run_in_threadpool(
                        clf.predict_batch,
                        good,
                        top_k=top_k or settings.default_top_k,
                        return_exceptions=True,
                    )
                )
            outcome = [next(answers) if item is None else item for item in outcome]
        request_id = request.state.request_id
        items: list[BatchItem] = []
        predictions = []
        for index, item in enumerate(outcome):
            if isinstance(item, ImageError):
                item = Problem.from_core(item)  # noqa: PLW2901
            if isinstance(item, Problem):
                obs.record_rejected(clf.version, item.kind)
                body = item.body(instance=f"{request.url.path}#{index}")
                items.append(BatchItem(index=index, status=item.status, problem=body))
            else:
                predictions.append(item)
                fields = item.to_dict()
                fields.pop("model_version")
                items.append(BatchItem(index=index, status=200, **fields))
        latency_ms = round((time.perf_counter() - start) * 1000, 2)
        if predictions:
            obs.record_predictions(clf.version, predictions, latency_ms)
        failed = len(items) - len(predictions)
        obs.logger.info(
            "batch",
            extra={
                "request_id": request_id,
                "model_version": clf.version,
                "images": len(items),
                "failed": failed,
                "classes": [p.predicted_class for p in predictions],
                "latency_ms": latency_ms,
            },
        )
        return BatchResponse(
            results=items,
            succeeded=len(predictions),
            failed=failed,
            model_version=clf.version,
            latency_ms=latency_ms,
            request_id=request_id,
        )


def _add_status(app: FastAPI, state: ModelState) -> None:
    ready = _ready(state)

    @app.get(
        "/health",
        response_model=HealthResponse,
        summary="Liveness and readiness: 200 once the model is loaded, else 503 with why",
        responses=ok(HEALTH_EXAMPLE)
        | responses(("model-unavailable", "s3://models/prod@v3: not found")),
    )
    async def health() -> dict[str, Any]:
        await ready()
        return state.health()

    @app.get(
        "/model/info",
        summary="The serving version's manifest entry",
        responses=ok(INFO_EXAMPLE) | responses(("model-unavailable", "the model is still loading")),
    )
    async def model_info() -> dict[str, Any]:
        clf = await ready()
        entry = clf.entry.model_dump(mode="json", exclude={"signature"})
        entry["sha256"] = clf.entry.sha256
        entry["runtime"] = clf.runtime.to_dict()
        return entry


def _add_error_handlers(app: FastAPI, state: ModelState) -> None:
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
        if problem.status >= 500:
            obs.record_failure(state.version, problem.kind)
        elif problem.kind not in ("not-found", "method-not-allowed"):
            obs.record_rejected(state.version, problem.kind)
        if problem.kind == "model-unavailable":
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


app = create_app()
"""What uvicorn serves: `uvicorn functions.api.app:app` (the model loads at startup)."""

__all__ = ["MEDIA_TYPE", "app", "create_app"]
