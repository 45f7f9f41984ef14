"""The API's OpenAPI document: response models, request bodies, the problems each operation
may answer, and examples.

The routes take the raw `Request` (one body may be multipart, a raw image or JSON), so FastAPI
cannot infer the request schema; it is spelled out here, exactly: what the schema allows the
API accepts (unless the bytes are not a decodable image, which no schema can say), what it
refuses the API refuses, and every status an operation can answer is listed with an example.
The document describes its deployment: `image_url` is in it only where URL input is on
(`API_URL_ALLOWLIST`). `tests/api/test_api_contract.py` holds the API to it with Schemathesis.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from functions.api.inputs import (
    IMAGE_KINDS,
    SERVED_TYPES,
    TOP_K_DESCRIPTION,
    BatchRequest,
    ImageRef,
    PredictRequest,
)
from functions.api.problems import EXAMPLE_REQUEST_ID, responses
from functions.api.settings import MAX_BODY_BYTES
from wastesort.manifest import InputSpec

if TYPE_CHECKING:
    from wastesort import Classifier


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
    capture_id: str | None = Field(
        default=None,
        description="present when the photo was captured (`POST /feedback` takes it)",
    )
    embedding: list[float] | None = Field(
        default=None,
        description="with `details=true`, where the version has a reference file: the image in "
        "the reference's 32-d PCA space (what drift reports compare)",
    )
    image_stats: dict[str, float] | None = Field(
        default=None,
        description="with `details=true`, where the version has a reference file: brightness, "
        "contrast, colourfulness and blur of the model input",
    )


class BatchItem(BaseModel):
    index: int
    status: int = Field(description="200, or the status of this item's problem")
    predicted_class: str | None = None
    confidence: float | None = None
    all_confidences: dict[str, float] | None = None
    decision: str | None = None
    capture_id: str | None = Field(
        default=None, description="present when this image was captured (as on `/predict`)"
    )
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


class ModelCard(BaseModel):
    """What a caller needs to know about the model that answers. The rest of its manifest
    entry (training config, data fingerprint, MLflow run, golden set, signature) is for the
    people who run the registry: `python -m wastesort registry show VERSION`."""

    version: str
    created_at: datetime
    labels: list[str] = Field(description="the classes, in the model's output order")
    input: InputSpec = Field(description="what an image is turned into before the network")
    metrics: dict[str, Any] = Field(description="the evaluation recorded when it was published")
    uncertain_threshold: float = Field(
        description="below this confidence the `decision` is `uncertain`"
    )
    temperature: float = Field(description="the softmax temperature the confidences use")
    sha256: str = Field(description="of the model file (also in /health)")
    runtime: dict[str, Any] = Field(description="the TFLite runtime serving it")

    @classmethod
    def of(cls, clf: Classifier) -> ModelCard:
        entry = clf.entry
        return cls(
            version=entry.version,
            created_at=entry.created_at,
            labels=entry.labels,
            input=entry.input,
            metrics=entry.metrics,
            uncertain_threshold=entry.uncertain_threshold,
            temperature=entry.temperature,
            sha256=entry.sha256,
            runtime=clf.runtime.to_dict(),
        )


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
    "request_id": EXAMPLE_REQUEST_ID,
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
    "request_id": EXAMPLE_REQUEST_ID,
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
    "runtime": HEALTH_EXAMPLE["runtime"],
}


TINY_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGPQqLABAAGoAN2QFCk0AAAAAElFTkSuQmCC"
)
"""A real 1x1 PNG: the JSON examples classify as they stand in `/docs` ("Try it out")."""

# --- what each operation may answer instead of 200 ---------------------------------------------

IMAGE_PROBLEMS = (  # the image itself, per request on /predict, per item inside a batch's 200
    ("empty-image", "the image is empty (0 bytes)"),
    ("not-an-image", "the bytes are not a JPEG, PNG or WebP image"),
    ("corrupt-image", "the PNG header is corrupt"),
    ("too-many-pixels", "the image has 10000x5000 = 50,000,000 pixels; the limit is 40,000,000"),
    ("invalid-base64", "image_base64 is not valid base64"),
    ("content-type-mismatch", "declared image/png but the bytes are image/jpeg"),
)
URL_PROBLEMS = (  # only where URL input is on
    ("url-not-allowed", "host 'images.example.com' resolves to a loopback address"),
    ("url-fetch-failed", "images.example.com answered HTTP 404"),
)
URL_OFF_PROBLEMS = (("url-input-disabled", "this deployment does not fetch image URLs"),)
REQUEST_PROBLEMS = (  # the request as a whole, on both prediction routes
    ("malformed-request", "the body is not valid JSON"),
    ("payload-too-large", f"the body is over {MAX_BODY_BYTES:,} bytes"),
    ("unsupported-media-type", "text/plain is not served; send image/jpeg, image/png, image/webp"),
    ("validation-error", "top_k must be a positive integer"),
    ("too-many-images", "at most 16 images"),
    ("request-timeout", "the body did not arrive within 15 s"),
    ("overloaded", "5 predictions are already running or waiting; retry shortly"),
)
SERVICE_PROBLEMS = (  # any operation
    ("model-unavailable", "the model is not loaded: the model registry could not be read"),
    ("internal-error", "an unexpected error; the request id is in the logs"),
)

REQUEST_ID_HEADER = {
    "description": "the request id (API Gateway's, the caller's `X-Request-Id`, or a new one)",
    "required": True,
    "schema": {"type": "string"},
}
RETRY_AFTER_HEADER = {
    "description": "seconds to wait before trying again",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def answers(example: dict[str, Any], *problems: tuple[str, str]) -> dict[int | str, Any]:
    """OpenAPI `responses`: the 200 with this example, then these problems grouped by status,
    each with the headers every answer carries (`Retry-After` on a 503)."""
    out: dict[int | str, Any] = {200: {"content": {"application/json": {"example": example}}}}
    out |= responses(*problems)
    for status, entry in out.items():
        headers = {"X-Request-Id": REQUEST_ID_HEADER}
        if status == 503:
            headers["Retry-After"] = RETRY_AFTER_HEADER
        entry["headers"] = headers
    return out


def predict_answers(*, url_input: bool) -> dict[int | str, Any]:
    url = URL_PROBLEMS if url_input else URL_OFF_PROBLEMS
    return answers(PREDICTION_EXAMPLE, *IMAGE_PROBLEMS, *url, *REQUEST_PROBLEMS, *SERVICE_PROBLEMS)


def batch_answers(*, url_input: bool) -> dict[int | str, Any]:
    """Image and URL problems of one item are inside the 200 (`results[i].problem`); only a
    deployment without URL input refuses a whole batch that names a URL."""
    url = () if url_input else URL_OFF_PROBLEMS
    return answers(BATCH_EXAMPLE, *url, *REQUEST_PROBLEMS, *SERVICE_PROBLEMS)


def status_answers(example: dict[str, Any]) -> dict[int | str, Any]:
    return answers(example, *SERVICE_PROBLEMS)


# --- the request bodies ------------------------------------------------------------------------


def one_image(model: type[BaseModel], *, url_input: bool) -> dict[str, Any]:
    """The JSON schema of what `model` validates: an object with exactly one image key, a
    string, beside the model's other fields and nothing else (a `oneOf` of one object per
    image kind; `image_url` only where URL input is on)."""
    fields = model.model_json_schema()["properties"]
    shared = {name: spec for name, spec in fields.items() if name not in IMAGE_KINDS}
    kinds = IMAGE_KINDS if url_input else IMAGE_KINDS[:1]
    branches = [
        {
            "title": kind,
            "type": "object",
            "properties": {
                kind: {"type": "string", "description": fields[kind]["description"]},
                **shared,
            },
            "required": [kind],
            "additionalProperties": False,
        }
        for kind in kinds
    ]
    return branches[0] if len(branches) == 1 else {"oneOf": branches}


TOP_K = {"type": "integer", "minimum": 1, "description": TOP_K_DESCRIPTION}


def request_body(*, batch: bool, batch_max: int, url_input: bool) -> dict[str, Any]:
    """The `requestBody` (every form the inputs module accepts) and the `top_k` query
    parameter of /predict or /predict/batch."""
    binary = {"type": "string", "format": "binary"}
    url_example = {"image_url": "https://images.example.com/bottle.jpg"}
    if batch:
        multipart = {
            "type": "object",
            "properties": {
                "files": {"type": "array", "items": binary, "minItems": 1, "maxItems": batch_max},
                "top_k": TOP_K,
            },
            "required": ["files"],
        }
        schema = BatchRequest.model_json_schema()
        schema.pop("$defs", None)
        schema["properties"]["images"] = {
            "type": "array",
            "items": one_image(ImageRef, url_input=url_input),
            "minItems": 1,
            "maxItems": batch_max,
        }
        images: list[dict[str, str]] = [{"image_base64": TINY_PNG_BASE64}]
        json_examples = {
            "inline": {"summary": "inline images", "value": {"images": images, "top_k": 3}}
        }
        if url_input:
            json_examples["mixed"] = {
                "summary": "inline and by URL (allow-listed hosts only)",
                "value": {"images": [*images, url_example]},
            }
        content: dict[str, Any] = {
            "multipart/form-data": {"schema": multipart},
            "application/json": {"schema": schema, "examples": json_examples},
        }
    else:
        multipart = {
            "type": "object",
            "properties": {"file": binary, "top_k": TOP_K},
            "required": ["file"],
        }
        json_examples = {
            "base64": {
                "summary": "an inline image",
                "value": {"image_base64": TINY_PNG_BASE64, "top_k": 3},
            }
        }
        if url_input:
            json_examples["url"] = {
                "summary": "an image URL (allow-listed hosts only)",
                "value": url_example,
            }
        content = {
            "multipart/form-data": {"schema": multipart},
            **{kind: {"schema": binary} for kind in SERVED_TYPES},
            "application/json": {
                "schema": one_image(PredictRequest, url_input=url_input),
                "examples": json_examples,
            },
        }
    urls = (
        "on here: `image_url` names an https image on an allow-listed host"
        if url_input
        else "off here: this deployment allow-lists no host, so `image_url` is refused (400 "
        "`url-input-disabled`)"
    )
    body = {
        "required": True,
        "description": f"URL input depends on the deployment (`API_URL_ALLOWLIST`); {urls}.",
        "content": content,
    }
    params = [{"name": "top_k", "in": "query", "required": False, "schema": TOP_K}]
    if not batch:
        params.append(DETAILS_PARAM)
    return {"requestBody": body, "parameters": params}


DETAILS_PARAM = {
    "name": "details",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "add `embedding` and `image_stats` to the answer (only versions published "
    "with a reference file have them; others answer without)",
}
