"""The reviewer's endpoints behind `/review`: list captures, fetch a photo, label one.

`GET /captures` answers the review queue: `uncertain` captures first, then those a caller's
feedback disagreed with, then the random sample; each group oldest first. By default only
captures no reviewer has labelled yet (`reviewed=true` lists every one). A label is one more
label event in the capture store (`wastesort.capture`, source `review`): nothing is overwritten
and the latest event wins. Every route needs an admin key (`functions.api.admin`). The routes are
in the OpenAPI document only where capture is on, like `/feedback`; elsewhere they answer 409.

The queue is built from one listing of the records and one of the label events: fine for the
thousands of captures a review round holds, not for millions (an index would be the next step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from functions.api.admin import ADMIN_PROBLEMS, require_admin
from functions.api.inputs import _json, read_body
from functions.api.problems import Problem, responses
from wastesort.capture import NOT_WASTE, SOURCE_PATTERN, Capture, LabelEvent, UnknownCaptureError
from wastesort.errors import RegistryError
from wastesort.scoring import UNCERTAIN

if TYPE_CHECKING:
    from functions.api.capture import Capturer
    from functions.api.settings import Settings
    from wastesort import Classifier

BY = "reviewer"
"""Who a review label is from: a person behind the admin key (no key or name is stored)."""
Queue = Literal["uncertain", "disagreement", "sample"]
QUEUE_ORDER: dict[str, int] = {"uncertain": 0, "disagreement": 1, "sample": 2}
CAPTURE_ID = Path(
    pattern=r"^\d{8}T\d{6}Z-[0-9a-f]{12}-" + SOURCE_PATTERN + "$",
    examples=["20261205T103000Z-4fcfb796ec38-api"],
)


class CaptureItem(BaseModel):
    id: str
    time: str
    source: str
    model_version: str
    predicted_class: str
    confidence: float
    all_confidences: dict[str, float]
    decision: str
    reason: str = Field(description="why it was kept: `uncertain`, `sampled` or `feedback`")
    queue: Queue = Field(description="its place in the review order")
    feedback_label: str | None = Field(None, description="the latest caller's label, if any")
    label: str | None = Field(None, description="the latest label of any source, if any")
    reviewed: bool = Field(description="a reviewer has labelled it")


class CapturePage(BaseModel):
    items: list[CaptureItem]
    total: int = Field(description="captures that match the filters, over every page")
    offset: int
    limit: int
    next_offset: int | None = Field(description="the `offset` of the next page, or null")
    labels: list[str] = Field(description="what a label may be: key 1 is the first, 0 not waste")
    sources: list[str] = Field(description="every source among the captures (for the filter)")
    model_versions: list[str] = Field(description="every model version among the captures")


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    label: str = Field(min_length=1, max_length=64, description="a class, or `not_waste`")


class LabelResponse(BaseModel):
    capture_id: str
    label: str
    source: str = Field(description="always `review`")
    time: str
    request_id: str


EXAMPLE_ITEM = {
    "id": "20261205T103000Z-4fcfb796ec38-api",
    "time": "2026-12-05T10:30:00.000Z",
    "source": "api",
    "model_version": "v3",
    "predicted_class": "plastic",
    "confidence": 0.41,
    "all_confidences": {"glass": 0.33, "plastic": 0.41, "metal": 0.26},
    "decision": "uncertain",
    "reason": "uncertain",
    "queue": "uncertain",
    "feedback_label": None,
    "label": None,
    "reviewed": False,
}
PAGE_EXAMPLE = {
    "items": [EXAMPLE_ITEM],
    "total": 1,
    "offset": 0,
    "limit": 50,
    "next_offset": None,
    "labels": ["cardboard", "glass", "metal", "paper", "plastic", "trash", "not_waste"],
    "sources": ["api", "bin-0042"],
    "model_versions": ["v3"],
}
LABEL_EXAMPLE = {
    "capture_id": EXAMPLE_ITEM["id"],
    "label": "glass",
    "source": "review",
    "time": "2026-12-05T11:02:13.120Z",
    "request_id": "c0ffee00-0000-4000-8000-000000000000",
}
LABEL_SCHEMA = LabelRequest.model_json_schema() | {"additionalProperties": False}
STORE_PROBLEMS = (
    ("capture-off", "this deployment does not capture images (API_CAPTURE_URI is not set)"),
    ("capture-unavailable", "the capture store did not answer"),
    ("model-unavailable", "the model is not loaded: the model registry could not be read"),
    ("validation-error", "the request is not valid: limit: should be at most 500"),
    ("internal-error", "an unexpected error; the request id is in the logs"),
)


def _answers(ok: dict[str, Any], *problems: tuple[str, str]) -> dict[int | str, Any]:
    return {200: ok} | responses(*ADMIN_PROBLEMS, *STORE_PROBLEMS, *problems)


def place(capture: Capture, events: list[LabelEvent]) -> Queue:
    """Where a capture goes in the review order."""
    feedback = [e for e in events if e.source == "feedback"]
    if capture.decision == UNCERTAIN or capture.reason == "uncertain":
        return "uncertain"
    if feedback and feedback[-1].label != capture.predicted_class:
        return "disagreement"
    return "sample"


def item(capture: Capture, events: list[LabelEvent]) -> CaptureItem:
    feedback = [e.label for e in events if e.source == "feedback"]
    return CaptureItem(
        **capture.to_dict(),
        queue=place(capture, events),
        feedback_label=feedback[-1] if feedback else None,
        label=events[-1].label if events else None,
        reviewed=any(e.source == "review" for e in events),
    )


def review_queue(
    captures: Iterable[Capture],
    labels: dict[str, list[LabelEvent]],
    *,
    source: str | None = None,
    model_version: str | None = None,
    reviewed: bool = False,
) -> tuple[list[CaptureItem], list[str], list[str]]:
    """(the filtered queue in review order, every source, every model version)."""
    items = [item(c, labels.get(c.id, [])) for c in captures]
    sources = sorted({i.source for i in items})
    versions = sorted({i.model_version for i in items})
    chosen = [
        i
        for i in items
        if (source is None or i.source == source)
        and (model_version is None or i.model_version == model_version)
        and (reviewed or not i.reviewed)
    ]
    chosen.sort(key=lambda i: (QUEUE_ORDER[i.queue], i.time, i.id))
    return chosen, sources, versions


def router(
    settings: Settings, capturer: Capturer, ready: Callable[[], Awaitable[Classifier]]
) -> APIRouter:
    """`GET /captures`, `GET /captures/{id}/image`, `PUT /captures/{id}/label`."""
    routes = APIRouter(
        tags=["review"],
        dependencies=[Depends(require_admin(settings))],
    )
    shown = capturer.enabled

    def store_or_problem() -> Any:
        if not capturer.enabled:
            raise Problem("capture-off", "this deployment does not capture images")
        return capturer.store

    @routes.get(
        "/captures",
        response_model=CapturePage,
        summary="The review queue: uncertain first, then feedback disagreements, then samples",
        responses=_answers({"content": {"application/json": {"example": PAGE_EXAMPLE}}}),
        include_in_schema=shown,
    )
    async def list_captures(
        source: str | None = Query(None, pattern=f"^{SOURCE_PATTERN}$", examples=["api"]),
        model_version: str | None = Query(None, max_length=128, examples=["v3"]),
        reviewed: bool = Query(False, description="also list what a reviewer has labelled"),
        offset: int = Query(0, ge=0, le=1_000_000),
        limit: int = Query(50, ge=1, le=500),
    ) -> CapturePage:
        store = store_or_problem()
        clf = await ready()

        def build() -> tuple[list[CaptureItem], list[str], list[str]]:
            return review_queue(
                store.captures(),
                store.all_labels(),
                source=source,
                model_version=model_version,
                reviewed=reviewed,
            )

        try:
            chosen, sources, versions = await run_in_threadpool(build)
        except RegistryError as exc:
            raise Problem("capture-unavailable", f"the capture store failed: {exc}") from None
        end = offset + limit
        return CapturePage(
            items=chosen[offset:end],
            total=len(chosen),
            offset=offset,
            limit=limit,
            next_offset=end if end < len(chosen) else None,
            labels=[*clf.labels, NOT_WASTE],
            sources=sources,
            model_versions=versions,
        )

    @routes.get(
        "/captures/{capture_id}/image",
        summary="A captured photo (JPEG, no metadata)",
        response_class=Response,
        responses=_answers(
            {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
            ("unknown-capture", "no capture 20261205T103000Z-4fcfb796ec38-api"),
        ),
        include_in_schema=shown,
    )
    async def capture_image(capture_id: str = CAPTURE_ID) -> Response:
        store = store_or_problem()
        data = await run_in_threadpool(_guarded, capture_id, store.image, capture_id)
        return Response(
            data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"}
        )

    @routes.put(
        "/captures/{capture_id}/label",
        response_model=LabelResponse,
        summary="Label a capture (one more label event; the latest wins)",
        responses=_answers(
            {"content": {"application/json": {"example": LABEL_EXAMPLE}}},
            ("unknown-capture", "no capture 20261205T103000Z-4fcfb796ec38-api"),
            ("unknown-label", "'bottle' is not one of: cardboard, glass, ..., not_waste"),
            ("malformed-request", "the body is not valid JSON"),
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": LABEL_SCHEMA,
                        "example": {"label": "glass"},
                    }
                },
            }
        },
        include_in_schema=shown,
    )
    async def label_capture(request: Request, capture_id: str = CAPTURE_ID) -> LabelResponse:
        store = store_or_problem()
        clf = await ready()
        body = await read_body(request, settings.max_body_bytes)
        try:
            parsed = LabelRequest.model_validate(_json(body))
        except ValidationError as exc:
            raise Problem.from_validation(exc) from None
        allowed = [*clf.labels, NOT_WASTE]
        if parsed.label not in allowed:
            raise Problem(
                "unknown-label",
                f"{parsed.label!r} is not one of: {', '.join(allowed)}",
                allowed=allowed,
            )

        def write() -> LabelEvent:
            store.record(capture_id)
            return store.add_label(capture_id, parsed.label, by=BY, source="review")

        event = await run_in_threadpool(_guarded, capture_id, write)
        return LabelResponse(
            capture_id=capture_id,
            label=event.label,
            source=event.source,
            time=event.time,
            request_id=request.state.request_id,
        )

    return routes


def _guarded(capture_id: str, call: Callable[..., Any], *args: Any) -> Any:
    """Run a store call; its errors become problems (no such capture: 404; the rest: 503)."""
    try:
        return call(*args)
    except UnknownCaptureError:
        raise Problem("unknown-capture", f"no capture {capture_id}") from None
    except RegistryError as exc:
        raise Problem("capture-unavailable", f"the capture store failed: {exc}") from None
