"""`POST /feedback`: a caller says which bin a photo belonged in.

Two forms: JSON `{"capture_id", "label"}` for a photo this API captured (its `/predict` answer
carried the id), or multipart `file` + `label` for a photo it never saw (a caller app that knows
the right bin), which is classified and captured first, reason `feedback`. Either way one label
event is appended (`wastesort.capture`); nothing is overwritten, the latest label wins. Labels
are the serving model's classes or `not_waste`. The route is in the OpenAPI document only where
capture is on (`API_CAPTURE_URI`), like `image_url`; elsewhere it answers 409 `capture-off`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from functions.api.inputs import _form, _json, _kind_of_body, _upload, read_body
from functions.api.problems import Problem, responses
from functions.api.schemas import REQUEST_ID_HEADER, RETRY_AFTER_HEADER
from wastesort.capture import API_SOURCE, NOT_WASTE, UnknownCaptureError, new_id
from wastesort.errors import ImageError, RegistryError

if TYPE_CHECKING:
    from functions.api.capture import Capturer
    from functions.api.settings import Settings
    from wastesort import Classifier

BY = "api-caller"
"""Who a feedback label is from: the API knows no person (and keeps no key or address)."""


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    capture_id: str = Field(
        min_length=1, max_length=128, description="from the `/predict` answer that captured it"
    )
    label: str = Field(
        min_length=1, max_length=64, description="one of the model's classes, or `not_waste`"
    )


class FeedbackResponse(BaseModel):
    capture_id: str = Field(description="the capture the label was recorded for")
    label: str
    request_id: str


FEEDBACK_EXAMPLE = {
    "capture_id": "20261205T103000Z-4fcfb796ec38-api",
    "label": "metal",
    "request_id": "c0ffee00-0000-4000-8000-000000000000",
}
PROBLEMS = (
    ("empty-image", "the image is empty (0 bytes)"),
    ("not-an-image", "the bytes are not a JPEG, PNG or WebP image"),
    ("corrupt-image", "the PNG header is corrupt"),
    ("too-many-pixels", "the image has 10000x5000 = 50,000,000 pixels; the limit is 40,000,000"),
    ("content-type-mismatch", "declared image/png but the bytes are image/jpeg"),
    ("malformed-request", "the body is not valid JSON"),
    ("unknown-capture", "no capture 20261205T103000Z-4fcfb796ec38-api"),
    ("capture-off", "this deployment does not capture images (API_CAPTURE_URI is not set)"),
    ("payload-too-large", "the body is over 4,194,304 bytes"),
    ("unsupported-media-type", "send JSON {capture_id, label} or multipart file + label"),
    ("validation-error", "the JSON body is not valid: label: field required"),
    ("unknown-label", "'bottle' is not one of: cardboard, glass, ..., not_waste"),
    ("request-timeout", "the body did not arrive within 15 s"),
    ("model-unavailable", "the model is not loaded: the model registry could not be read"),
    ("capture-unavailable", "the capture store did not answer"),
    ("internal-error", "an unexpected error; the request id is in the logs"),
)


def _answers() -> dict[int | str, Any]:
    out: dict[int | str, Any] = {
        202: {"content": {"application/json": {"example": FEEDBACK_EXAMPLE}}}
    }
    out |= responses(*PROBLEMS)
    for status, entry in out.items():
        entry["headers"] = {"X-Request-Id": REQUEST_ID_HEADER}
        if status == 503:
            entry["headers"]["Retry-After"] = RETRY_AFTER_HEADER
    return out


def _request_body() -> dict[str, Any]:
    multipart = {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "label": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        "required": ["file", "label"],
    }
    schema = FeedbackRequest.model_json_schema()
    schema["additionalProperties"] = False
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": schema,
                "example": {k: FEEDBACK_EXAMPLE[k] for k in ("capture_id", "label")},
            },
            "multipart/form-data": {"schema": multipart},
        },
    }
    return {"requestBody": body}


def router(
    settings: Settings, capturer: Capturer, ready: Callable[[], Awaitable[Classifier]]
) -> APIRouter:
    """The `/feedback` route over this app's capturer and model."""
    routes = APIRouter()

    @routes.post(
        "/feedback",
        status_code=202,
        response_model=FeedbackResponse,
        summary="Say which bin a photo belonged in (a captured one, or a new one)",
        responses=_answers(),
        openapi_extra=_request_body(),
        include_in_schema=capturer.enabled,
    )
    async def feedback(request: Request) -> FeedbackResponse:
        if not capturer.enabled:
            raise Problem("capture-off", "this deployment does not capture images")
        clf = await ready()
        kind = _kind_of_body(request)
        if kind == "raw":
            raise Problem(
                "unsupported-media-type", "send JSON {capture_id, label} or multipart file + label"
            )
        body = await read_body(request, settings.max_body_bytes)
        if kind == "json":
            try:
                parsed = FeedbackRequest.model_validate(_json(body))
            except ValidationError as exc:
                raise Problem.from_validation(exc) from None
            _check_label(parsed.label, clf)
            capture_id = await run_in_threadpool(_label_capture, capturer, parsed)
            label = parsed.label
        else:
            capture_id, label = await _capture_upload(request, capturer, clf)
        return FeedbackResponse(
            capture_id=capture_id, label=label, request_id=request.state.request_id
        )

    return routes


def _check_label(label: str, clf: Classifier) -> None:
    allowed = [*clf.labels, NOT_WASTE]
    if label not in allowed:
        raise Problem(
            "unknown-label", f"{label!r} is not one of: {', '.join(allowed)}", allowed=allowed
        )


def _unavailable(exc: RegistryError) -> Problem:
    return Problem("capture-unavailable", f"the capture store failed: {exc.message}")


def _label_capture(capturer: Capturer, parsed: FeedbackRequest) -> str:
    try:
        capturer.store.record(parsed.capture_id)
        capturer.store.add_label(parsed.capture_id, parsed.label, by=BY, source="feedback")
    except UnknownCaptureError:
        raise Problem("unknown-capture", f"no capture {parsed.capture_id}") from None
    except RegistryError as exc:
        raise _unavailable(exc) from None
    return parsed.capture_id


async def _capture_upload(request: Request, capturer: Capturer, clf: Classifier) -> tuple[str, str]:
    form = await _form(request, max_files=1)
    try:
        label = form.get("label")
        if "file" not in form or not isinstance(label, str) or not label:
            raise Problem("validation-error", "the multipart body needs `file` and a `label`")
        image = (await _upload(form["file"], "file")).check()
    finally:
        await form.close()
    _check_label(label, clf)

    def capture() -> str:
        prediction = clf.predict(image.data)
        capture_id = new_id(API_SOURCE)
        capturer.store.save(image.data, prediction, reason="feedback", capture_id=capture_id)
        capturer.store.add_label(capture_id, label, by=BY, source="feedback")
        return capture_id

    try:
        return await run_in_threadpool(capture), label
    except ImageError as exc:
        raise Problem.from_core(exc) from None
    except RegistryError as exc:
        raise _unavailable(exc) from None
