"""The FastAPI app: `/predict`, `/predict/batch`, `/health`, `/model/info`, `/feedback`,
the reviewer's `/captures` and the two pages (`/`, `/review`).

`create_app()` builds it, once per process: uvicorn calls it (`--factory`, `make serve`) and the
Lambda handler calls it at init (`functions.api.handler`). Nothing builds an app at import, so
importing this module costs no routes and loads no model. Every error is
`application/problem+json` (`functions.api.problems`); nothing unexpected leaks a traceback.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from functions.api import feedback, review
from functions.api import observability as obs
from functions.api.capture import Capturer
from functions.api.fetch import Fetcher
from functions.api.inputs import CheckedImage, parse_batch, parse_single
from functions.api.middleware import add_middleware
from functions.api.model import ModelState
from functions.api.pages import add_pages
from functions.api.problems import Problem, add_error_handlers
from functions.api.records import Recorder, answered
from functions.api.schemas import (
    HEALTH_EXAMPLE,
    INFO_EXAMPLE,
    BatchItem,
    BatchResponse,
    HealthResponse,
    ModelCard,
    PredictResponse,
    batch_answers,
    predict_answers,
    request_body,
    status_answers,
)
from functions.api.settings import Settings
from wastesort import Classifier, __version__
from wastesort.errors import ImageError


def create_app(
    settings: Settings | None = None,
    *,
    classifier: Classifier | None = None,
    fetcher: Fetcher | None = None,
    capturer: Capturer | None = None,
    recorder: Recorder | None = None,
    load_on_startup: bool = True,
) -> FastAPI:
    """Build the API.

    Args:
        settings: configuration; default from the environment.
        classifier: serve this already loaded model instead of loading `settings.model_uri`.
        fetcher: how image URLs are fetched (tests pass one over a mock transport).
        capturer: what is captured and where (tests pass a seeded one); default from settings.
        recorder: which predictions become drift records, and where; default from settings.
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

    capturer = capturer or Capturer(settings)
    recorder = recorder or Recorder(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if load_on_startup and not state.loaded:
            await run_in_threadpool(state.load)
        yield
        await run_in_threadpool(recorder.flush)  # what waits is written, not dropped

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
    app.state.capturer = capturer
    app.state.recorder = recorder
    add_middleware(app, state, settings)
    add_error_handlers(app, state)
    _add_routes(app, state, settings, fetcher, capturer, recorder=recorder)
    return app


def _ready(state: ModelState) -> Any:
    async def ready() -> Classifier:
        if not state.loaded and state.retry_due():
            await run_in_threadpool(state.load)
        return state.require()

    return ready


def _add_routes(
    app: FastAPI,
    state: ModelState,
    settings: Settings,
    fetcher: Fetcher,
    capturer: Capturer,
    *,
    recorder: Recorder,
) -> None:
    _add_predict(app, state, settings, fetcher, capturer, recorder=recorder)
    _add_batch(app, state, settings, fetcher, capturer, recorder=recorder)
    _add_status(app, state)
    app.include_router(feedback.router(settings, capturer, _ready(state)))
    app.include_router(review.router(settings, capturer, _ready(state)))
    add_pages(app)


def _add_predict(
    app: FastAPI,
    state: ModelState,
    settings: Settings,
    fetcher: Fetcher,
    capturer: Capturer,
    *,
    recorder: Recorder,
) -> None:
    ready = _ready(state)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        summary="Classify one image",
        response_model_exclude_none=True,
        responses=predict_answers(url_input=fetcher.enabled),
        openapi_extra=request_body(
            batch=False, batch_max=settings.batch_max, url_input=fetcher.enabled
        ),
    )
    async def predict(request: Request, background: BackgroundTasks) -> PredictResponse:
        start = time.perf_counter()
        clf = await ready()
        image, top_k = await parse_single(request, limit=settings.max_body_bytes, fetcher=fetcher)
        details = _details(request.query_params.get("details"))
        try:
            with obs.subsegment("predict", model_version=clf.version):
                full = await run_in_threadpool(clf.predict, image.data)  # the record's
        except ImageError as exc:
            raise Problem.from_core(exc) from None
        prediction = answered(full, top_k or settings.default_top_k)
        capture_id = capturer.schedule(background, image.data, prediction)
        recorder.schedule(background, [full])
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
                "capture_id": capture_id,
            },
        )
        return PredictResponse(
            **prediction.to_dict(details=details),
            latency_ms=latency_ms,
            request_id=request_id,
            capture_id=capture_id,
        )


def _details(value: str | None) -> bool:
    """The `details` query flag: absent, `true` or `false` (as the schema's boolean says)."""
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise Problem("validation-error", "details must be true or false")


def _add_batch(
    app: FastAPI,
    state: ModelState,
    settings: Settings,
    fetcher: Fetcher,
    capturer: Capturer,
    *,
    recorder: Recorder,
) -> None:
    ready = _ready(state)

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        summary="Classify several images; each bad one gets its own problem",
        responses=batch_answers(url_input=fetcher.enabled),
        openapi_extra=request_body(
            batch=True, batch_max=settings.batch_max, url_input=fetcher.enabled
        ),
    )
    async def predict_batch(request: Request, background: BackgroundTasks) -> BatchResponse:
        start = time.perf_counter()
        clf = await ready()
        outcome: list[Any]
        outcome, top_k = await parse_batch(
            request,
            limit=settings.max_body_bytes,
            batch_max=settings.batch_max,
            fetcher=fetcher,
        )
        good = [item.data for item in outcome if isinstance(item, CheckedImage)]
        data = [item.data if isinstance(item, CheckedImage) else b"" for item in outcome]
        if good:
            with obs.subsegment("predict_batch", model_version=clf.version):
                answers = iter(
                    await run_in_threadpool(
                        clf.predict_batch,
                        good,  # every class: the records' (`answered` cuts the answers)
                        return_exceptions=True,
                    )
                )
            outcome = [
                next(answers) if isinstance(item, CheckedImage) else item for item in outcome
            ]
        request_id = request.state.request_id
        items: list[BatchItem] = []
        predictions, full = [], []
        for index, item in enumerate(outcome):
            if isinstance(item, ImageError):
                item = Problem.from_core(item)  # noqa: PLW2901
            if isinstance(item, Problem):
                obs.record_rejected(clf.version, item.kind)
                body = item.body(instance=f"{request.url.path}#{index}")
                items.append(BatchItem(index=index, status=item.status, problem=body))
            else:
                full.append(item)
                item = answered(item, top_k or settings.default_top_k)  # noqa: PLW2901
                predictions.append(item)
                fields = item.to_dict()
                fields.pop("model_version")
                capture_id = capturer.schedule(background, data[index], item)
                items.append(BatchItem(index=index, status=200, capture_id=capture_id, **fields))
        recorder.schedule(background, full)
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
        responses=status_answers(HEALTH_EXAMPLE),
    )
    async def health() -> dict[str, Any]:
        await ready()
        return state.health()

    @app.get(
        "/model/info",
        response_model=ModelCard,
        summary="The serving model's card: version, labels, input, metrics, thresholds, runtime",
        responses=status_answers(INFO_EXAMPLE),
    )
    async def model_info() -> ModelCard:
        return ModelCard.of(await ready())


__all__ = ["create_app"]
