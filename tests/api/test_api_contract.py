"""The OpenAPI document is the API's contract, and the API keeps it (issue 31, defect 13).

Schemathesis generates requests from `/openapi.json` (the documented examples, the schema's
boundaries and mutations of them, then random ones, valid and not) against the app serving the
tiny model, and checks every answer: no 5xx, every status and content type documented, 200
bodies match their models, schema-violating requests refused, schema-valid ones accepted (or
refused only for their image's bytes: `contract_checks.py`). Bounded and derandomized, so it
takes seconds and CI sees the same requests every run.

The tests after it pin what Schemathesis first found, each as a body the schema allows or
forbids and the answer the API gives.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient

from functions.api.app import create_app
from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from functions.api.schemas import TINY_PNG_BASE64
from tests.api.conftest import ALLOWLIST, make_settings
from tests.api.contract_checks import image_accepted_unless_undecodable
from wastesort import Classifier

MAX_EXAMPLES = 50
"""Random requests per operation after the examples and the coverage phase (~300 requests
in all, a few seconds)."""

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 31,
        "generation": {"deterministic": True, "database": "none", "max-examples": MAX_EXAMPLES},
    }
)
# The document needs no model: build it from an app that loads none.
SPEC = create_app(make_settings(), load_on_startup=False).openapi()
contract = schemathesis.openapi.from_dict(SPEC, config=CONFIG)


@pytest.fixture(scope="module")
def served(classifier: Classifier) -> FastAPI:
    """The app the document describes (same settings: URL input off), serving the tiny model."""
    return create_app(make_settings(), classifier=classifier, load_on_startup=False)


@pytest.fixture(scope="module")
def served_client(served: FastAPI) -> Iterator[TestClient]:
    with TestClient(served, raise_server_exceptions=False) as client:
        yield client


@contract.parametrize()
def test_the_api_keeps_its_openapi_contract(case: schemathesis.Case, served: FastAPI):
    case.call_and_validate(
        app=served,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[image_accepted_unless_undecodable],
    )


# --- what Schemathesis found, pinned ----------------------------------------------------------

URL = "https://images.example.com/bottle.jpg"


def body_schema(spec: dict[str, Any], path: str, media: str) -> Draft202012Validator:
    schema = spec["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
    return Draft202012Validator(schema)


def assert_agree(spec: dict[str, Any], response: Any, path: str, body: Any, valid: bool) -> None:
    """The schema and the API give the same verdict on this JSON body."""
    assert body_schema(spec, path, "application/json").is_valid(body) is valid, body
    if valid:
        assert response.status_code == 200, response.text
    else:
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == MEDIA_TYPE


@pytest.mark.parametrize(
    ("body", "valid", "kind"),
    [
        ({"image_base64": TINY_PNG_BASE64}, True, None),
        ({"image_base64": TINY_PNG_BASE64, "top_k": 2}, True, None),
        ({"image_base64": TINY_PNG_BASE64, "top_k": None}, True, None),
        ({"image_base64": TINY_PNG_BASE64, "top_k": 2.0}, True, None),  # JSON Schema: an integer
        ({"image_url": URL}, False, "url-input-disabled"),  # not in this deployment's schema
        ({"image_base64": TINY_PNG_BASE64, "image_url": URL}, False, "validation-error"),
        ({}, False, "validation-error"),
        ({"image_base64": None}, False, "validation-error"),
        ({"image_base64": 5}, False, "validation-error"),
        ({"image_base64": TINY_PNG_BASE64, "top_k": True}, False, "validation-error"),
        ({"image_base64": TINY_PNG_BASE64, "top_k": "2"}, False, "validation-error"),
        ({"image_base64": TINY_PNG_BASE64, "top_k": 0}, False, "validation-error"),
        ({"image_base64": TINY_PNG_BASE64, "image": "x"}, False, "validation-error"),
    ],
)
def test_predict_json_the_schema_and_the_api_agree(served_client: TestClient, body, valid, kind):
    response = served_client.post("/predict", json=body)
    spec = served_client.get("/openapi.json").json()
    assert_agree(spec, response, "/predict", body, valid)
    if kind:
        assert response.json()["type"] == PROBLEM_BASE + kind


@pytest.mark.parametrize(
    ("body", "valid", "kind"),
    [
        ({"images": [{"image_base64": TINY_PNG_BASE64}], "top_k": 1}, True, None),
        ({"images": [{}]}, False, "validation-error"),
        ({"images": []}, False, "validation-error"),
        ({"images": [{"image_base64": TINY_PNG_BASE64, "top_k": 1}]}, False, "validation-error"),
        ({"images": [{"image_url": URL}]}, False, "url-input-disabled"),  # the whole batch
        ({"images": [{"image_base64": TINY_PNG_BASE64}] * 5}, False, "too-many-images"),
    ],
)
def test_batch_json_the_schema_and_the_api_agree(served_client: TestClient, body, valid, kind):
    response = served_client.post("/predict/batch", json=body)
    spec = served_client.get("/openapi.json").json()
    assert_agree(spec, response, "/predict/batch", body, valid)
    if kind:
        assert response.json()["type"] == PROBLEM_BASE + kind


def test_url_input_is_in_the_schema_only_where_it_is_on(make_client):
    off = make_client().get("/openapi.json").json()
    on_client = make_client(url_allowlist=ALLOWLIST)
    on = on_client.get("/openapi.json").json()
    for spec, url_input in ((off, False), (on, True)):
        predict = spec["paths"]["/predict"]["post"]
        assert ("oneOf" in predict["requestBody"]["content"]["application/json"]["schema"]) is (
            url_input
        )
        assert ("off here" in predict["requestBody"]["description"]) is not url_input
        examples = predict["responses"]["400"]["content"][MEDIA_TYPE]["examples"]
        assert ("url-input-disabled" in examples) is not url_input
        assert ("url-not-allowed" in examples) is url_input
        assert ("422" in predict["responses"]) and ("url-fetch-failed" in str(predict)) is url_input
    # where URL input is on, a URL is schema-valid and classified; both kinds at once are not
    response = on_client.post("/predict", json={"image_url": URL})
    assert_agree(on, response, "/predict", {"image_url": URL}, valid=True)
    both = {"image_url": URL, "image_base64": TINY_PNG_BASE64}
    assert_agree(on, on_client.post("/predict", json=both), "/predict", both, valid=False)
    mixed = {"images": [{"image_url": URL}, {"image_base64": TINY_PNG_BASE64}]}
    response = on_client.post("/predict/batch", json=mixed)
    assert_agree(on, response, "/predict/batch", mixed, valid=True)
    assert [r["status"] for r in response.json()["results"]] == [200, 200]


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "green").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("path", "request_kwargs"),
    [
        # an empty top_k: the schema says integer >= 1
        (
            "/predict",
            {"files": {"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}, "data": {"top_k": ""}},
        ),
        (
            "/predict/batch",
            {"files": [("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))], "data": {"top_k": ""}},
        ),
        ("/predict?top_k=", {"content": jpeg_bytes(), "headers": {"content-type": "image/jpeg"}}),
        (
            "/predict?top_k=1_0",
            {"content": jpeg_bytes(), "headers": {"content-type": "image/jpeg"}},
        ),
        (
            "/predict?top_k=%2B1",
            {"content": jpeg_bytes(), "headers": {"content-type": "image/jpeg"}},
        ),
        # a batch's `files` given as text, not a file: the request's shape, not an image's bytes
        ("/predict/batch", {"data": {"files": "{}"}, "files": {"x": ("x", b"", "text/plain")}}),
        (
            "/predict/batch",
            {
                "files": [("files", ("a.jpg", jpeg_bytes(), "image/jpeg"))],
                "data": {"files": "not a file"},
            },
        ),
    ],
)
def test_schema_violating_multipart_and_query_are_refused(
    client: TestClient, path: str, request_kwargs: dict
):
    response = client.post(path, **request_kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == PROBLEM_BASE + "validation-error"


def test_every_status_an_operation_answers_is_documented(client: TestClient):
    spec = client.get("/openapi.json").json()
    batch = spec["paths"]["/predict/batch"]["post"]["responses"]
    nul = client.post("/predict/batch", content=b"\0", headers={"content-type": "application/json"})
    assert nul.status_code == 400 and nul.json()["type"] == PROBLEM_BASE + "malformed-request"
    assert "malformed-request" in batch["400"]["content"][MEDIA_TYPE]["examples"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert {"200", "500", "503"} <= set(answers), (method, path)
            for status, answer in answers.items():
                assert answer["headers"]["X-Request-Id"]["required"], (path, status)
                if status == "503":
                    assert answer["headers"]["Retry-After"]["required"], path
    for path in ("/predict", "/predict/batch"):
        answers = spec["paths"][path]["post"]["responses"]
        assert {"400", "408", "413", "415", "422"} <= set(answers), path
        names = {p["name"] for p in spec["paths"][path]["post"]["parameters"]}
        assert names == ({"top_k", "details"} if path == "/predict" else {"top_k"}), path
