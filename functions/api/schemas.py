"""The API's OpenAPI document: response models, request bodies and examples.

The routes take the raw `Request` (one body may be multipart, a raw image or JSON), so FastAPI
cannot infer the request schema; it is spelled out here, with examples that match what the API
answers, so `/docs` shows every input form and every problem a route can give.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from functions.api.inputs import SERVED_TYPES, BatchRequest, ImageRef, PredictRequest
from functions.api.problems import EXAMPLE_REQUEST_ID
from functions.api.settings import MAX_BODY_BYTES


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
}


def ok(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a 200 with this example (merged with `problems.responses`)."""
    return {200: {"content": {"application/json": {"example": example}}}}


IMAGE_PROBLEMS = (  # what /predict may answer instead, with a detail it could give
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


def request_body(batch: bool, batch_max: int) -> dict[str, Any]:
    """The `requestBody` of /predict or /predict/batch: every form the inputs module accepts."""
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
