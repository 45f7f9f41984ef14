"""The Lambda entry point: real API Gateway REST (v1) and HTTP API (v2) events, binary bodies
base64-encoded as API Gateway sends them, into Mangum, with the registry on S3 (moto)."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from functions.hooks.pre_traffic import api_event
from tests.api.conftest import gateway_event, multipart
from tests.conftest import ROOT, sample_bytes, tiny_fields
from wastesort import Classifier
from wastesort.registry import GoldenSample, Registry

BUCKET = "wastesort-api-test-models"


class FakeContext:
    aws_request_id = "9f1c1e4a-2b3c-4d5e-8f90-1a2b3c4d5e6f"
    function_name = "wastesort-api"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:wastesort-api:live"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture(scope="module")
def lambda_module(tiny_int8: Path, tmp_path_factory: pytest.TempPathFactory):
    """`functions.api.handler` imported as Lambda would: MODEL_URI on S3, cache under /tmp."""
    cache = tmp_path_factory.mktemp("lambda-tmp") / "wastesort"
    with mock_aws(), pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        Registry.from_uri(f"s3://{BUCKET}/models", cache_dir=cache.parent / "publish").publish(
            tiny_int8,
            version="tiny-s3",
            golden=[GoldenSample("glass.jpg", sample_bytes("glass"), "glass")],
            aliases=["production"],
            **tiny_fields(),
        )
        env.setenv("MODEL_URI", f"s3://{BUCKET}/models@production")
        env.setenv("WASTESORT_CACHE_DIR", str(cache))
        env.setenv("POWERTOOLS_SERVICE_NAME", "wastesort-api")
        env.setenv("POWERTOOLS_METRICS_NAMESPACE", "Wastesort")
        sys.modules.pop("functions.api.handler", None)
        module = importlib.import_module("functions.api.handler")
        # Mangum set up an event loop for this thread (as on Lambda) and runs every
        # invocation on it; close it afterwards instead of leaving it to the garbage collector.
        loop = asyncio.get_event_loop_policy().get_event_loop()
        yield module
        asyncio.set_event_loop(None)
        loop.close()
        sys.modules.pop("functions.api.handler", None)


@pytest.fixture(scope="module")
def reference(tiny_int8: Path) -> Classifier:
    return Classifier.load(tiny_int8, labels=tiny_fields()["labels"])


def call(module: ModuleType, event: dict[str, Any]) -> tuple[int, dict, dict]:
    response = module.handler(event, FakeContext())
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = values[-1]
    return response["statusCode"], json.loads(body), headers


def test_model_loaded_at_init_from_s3_into_the_cache(lambda_module: ModuleType):
    state = lambda_module.app.state.model
    assert state.loaded and state.version == "tiny-s3"
    cold = lambda_module.COLD_START
    assert cold["model_loaded"] and cold["model_version"] == "tiny-s3"
    assert {"imports_ms", "app_ms", "model_ms", "warmup_ms", "total_ms"} <= set(cold)
    cache = Path(os.environ.get("WASTESORT_CACHE_DIR", ""))
    sha = state.classifier.entry.sha256
    assert (cache / f"{sha}.tflite").exists()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_binary_multipart_upload(lambda_module, reference, version: str):
    jpeg = sample_bytes("metal")
    body, content_type = multipart([("file", ("can.jpg", jpeg, "image/jpeg"))])
    event = gateway_event(version, "POST", "/predict", body=body, content_type=content_type)
    assert event["isBase64Encoded"] is True
    status, answer, headers = call(lambda_module, event)
    assert status == 200, answer
    expected = reference.predict(jpeg)
    assert answer["predicted_class"] == expected.predicted_class
    assert answer["all_confidences"] == expected.all_confidences
    assert answer["model_version"] == "tiny-s3"
    assert answer["request_id"] == event["requestContext"]["requestId"]
    assert headers["x-request-id"] == answer["request_id"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_binary_raw_image_and_json_base64(lambda_module, reference, version: str):
    png = sample_bytes("paper")
    raw = gateway_event(version, "POST", "/predict", body=png, content_type="image/jpeg")
    status, answer, _ = call(lambda_module, raw)
    assert status == 200, answer
    payload = json.dumps({"image_base64": base64.b64encode(png).decode(), "top_k": 2})
    as_json = gateway_event(
        version,
        "POST",
        "/predict",
        body=payload.encode(),
        content_type="application/json",
        binary=False,
    )
    status, answer, _ = call(lambda_module, as_json)
    assert status == 200 and len(answer["all_confidences"]) == 2


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bad_images_are_problems_through_the_gateway(lambda_module, version: str):
    jpeg = sample_bytes("trash")
    for data, kind in ((jpeg[:500], "corrupt-image"), (b"", "empty-image")):
        body, content_type = multipart([("file", ("x.jpg", data, "image/jpeg"))])
        event = gateway_event(version, "POST", "/predict", body=body, content_type=content_type)
        response = lambda_module.handler(event, FakeContext())
        assert response["isBase64Encoded"] is False  # problems are text, not binary
        status, answer, headers = call(lambda_module, event)
        assert status == 400 and answer["type"] == PROBLEM_BASE + kind
        assert headers["content-type"] == MEDIA_TYPE


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_through_the_gateway(lambda_module, version: str):
    files = [
        ("files", ("a.jpg", sample_bytes("glass"), "image/jpeg")),
        ("files", ("b.txt", b"hello", "text/plain")),
    ]
    body, content_type = multipart(files)
    event = gateway_event(version, "POST", "/predict/batch", body=body, content_type=content_type)
    status, answer, _ = call(lambda_module, event)
    assert status == 200 and [r["status"] for r in answer["results"]] == [200, 415]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_health_and_info(lambda_module, version: str):
    status, health, _ = call(lambda_module, gateway_event(version, "GET", "/health"))
    assert status == 200
    assert health["model_version"] == "tiny-s3"
    assert health["sha256"] == lambda_module.app.state.model.classifier.entry.sha256
    status, info, _ = call(lambda_module, gateway_event(version, "GET", "/model/info"))
    assert status == 200 and info["labels"] == tiny_fields()["labels"]


def test_docs_behind_a_rest_api_stage(lambda_module):
    """At https://.../prod/docs the UI must load /prod/openapi.json, not /openapi.json."""
    status, _, _ = call(lambda_module, gateway_event("v1", "GET", "/openapi.json"))
    assert status == 200
    response = lambda_module.handler(gateway_event("v1", "GET", "/docs"), FakeContext())
    assert response["statusCode"] == 200
    assert "'/prod/openapi.json'" in response["body"] or '"/prod/openapi.json"' in response["body"]
    response = lambda_module.handler(gateway_event("v2", "GET", "/docs"), FakeContext())
    assert "/openapi.json" in response["body"] and "/prod/" not in response["body"]


LAMBDA_EVENT_LIMIT = 6 * 1024 * 1024
"""Lambda refuses a synchronous invocation whose event is over 6 MB (6,291,456 bytes)."""
HEADER_ROOM = 2 * 10 * 1024
"""API Gateway takes at most 10 KB of request headers; a REST event carries them twice."""


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_largest_body_the_api_accepts_fits_in_a_lambda_event(lambda_module, version: str):
    """API Gateway base64-encodes a binary body into the event: a body under the API's limit
    that makes the event too big would fail at the gateway (a 5XX), never reaching the app."""
    limit = lambda_module.settings.max_body_bytes
    jpeg = sample_bytes("glass")
    body = jpeg + b"\0" * (limit - len(jpeg))  # bytes after the JPEG's end are ignored
    event = gateway_event(version, "POST", "/predict", body=body, content_type="image/jpeg")
    assert len(json.dumps(event).encode()) + HEADER_ROOM <= LAMBDA_EVENT_LIMIT
    status, answer, _ = call(lambda_module, event)
    assert status == 200, answer
    over = gateway_event(version, "POST", "/predict", body=body + b"\0", content_type="image/jpeg")
    status, answer, _ = call(lambda_module, over)
    assert status == 413 and answer["type"] == PROBLEM_BASE + "payload-too-large"
    assert answer["limit"] == limit


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_octet_stream_bodies_are_sniffed_through_the_gateway(lambda_module, reference, version):
    """application/octet-stream is a binary media type: API Gateway sends it base64-encoded."""
    png = sample_bytes("paper")
    event = gateway_event(
        version, "POST", "/predict", body=png, content_type="application/octet-stream"
    )
    assert event["isBase64Encoded"] is True
    status, answer, _ = call(lambda_module, event)
    assert status == 200, answer
    assert answer["all_confidences"] == reference.predict(png).all_confidences
    not_image = gateway_event(
        version, "POST", "/predict", body=b"%PDF-1.7\n", content_type="application/octet-stream"
    )
    status, answer, _ = call(lambda_module, not_image)
    assert status == 400 and answer["type"] == PROBLEM_BASE + "not-an-image"


def test_the_pre_traffic_hooks_events_are_understood(lambda_module):
    """The deploy hook replays golden images with its own v1 events: keep that contract."""
    status, health, _ = call(lambda_module, api_event("GET", "/health"))
    assert status == 200 and health["model_version"] == "tiny-s3"
    image = {"image_base64": base64.b64encode(sample_bytes("glass")).decode()}
    status, answer, _ = call(lambda_module, api_event("POST", "/predict", image))
    assert status == 200 and answer["model_version"] == "tiny-s3"


def run_python(code: str, env: dict[str, str], event: dict[str, Any], tmp_path: Path) -> dict:
    """Run `code` in a fresh interpreter with `event` loaded as EVENT; it prints one JSON line."""
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(event))
    prelude = f"import json, sys\nEVENT = json.loads(open({str(event_file)!r}).read())\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "POWERTOOLS_METRICS_DISABLED": "true", **env},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_handler_builds_the_one_app(api_registry: Path, tmp_path: Path):
    """Importing the app module builds nothing; the handler builds the app once, at init."""
    event = gateway_event("v2", "GET", "/health")
    out = run_python(
        """
        import fastapi
        built = []
        original = fastapi.FastAPI.__init__
        def counting(self, *args, **kwargs):
            built.append(1)
            original(self, *args, **kwargs)
        fastapi.FastAPI.__init__ = counting
        import functions.api.app
        after_app_import = len(built)
        from functions.api.handler import handler
        status = handler(EVENT, None)["statusCode"]
        print(json.dumps({"app_import": after_app_import, "total": len(built), "status": status}))
        """,
        {"MODEL_URI": str(api_registry), "WASTESORT_CACHE_DIR": str(tmp_path / "cache")},
        event,
        tmp_path,
    )
    assert out == {"app_import": 0, "total": 1, "status": 200}


def test_serving_path_never_imports_tensorflow(api_registry: Path, tmp_path: Path):
    event = gateway_event(
        "v2", "POST", "/predict", body=sample_bytes("glass"), content_type="image/jpeg"
    )
    out = run_python(
        """
        from functions.api.handler import handler
        response = handler(EVENT, None)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print(json.dumps({"status": response["statusCode"], "heavy": heavy}))
        """,
        {"MODEL_URI": str(api_registry), "WASTESORT_CACHE_DIR": str(tmp_path / "cache")},
        event,
        tmp_path,
    )
    assert out == {"status": 200, "heavy": []}


def test_init_survives_a_model_that_cannot_load(tmp_path: Path):
    out = run_python(
        """
        from functions.api.handler import handler
        response = handler(EVENT, None)
        print(json.dumps({"status": response["statusCode"], "body": json.loads(response["body"])}))
        """,
        {"MODEL_URI": str(tmp_path / "nothing-here@v9")},
        gateway_event("v2", "GET", "/health"),
        tmp_path,
    )
    assert out["status"] == 503
    assert out["body"]["type"] == PROBLEM_BASE + "model-unavailable"
    assert "registry could not be read" in out["body"]["detail"]
    assert str(tmp_path) not in json.dumps(out["body"])  # where is for the log, not callers


def preflight_event(origin: str) -> dict[str, Any]:
    """A browser's CORS preflight as API Gateway passes it on: OPTIONS, and no x-api-key."""
    event = gateway_event("v1", "OPTIONS", "/predict")
    del event["headers"]["x-api-key"], event["multiValueHeaders"]["x-api-key"]
    asked = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key",
    }
    event["headers"].update(asked)
    event["multiValueHeaders"].update({k: [v] for k, v in asked.items()})
    return event


PREFLIGHT = """
    from functions.api.handler import handler
    response = handler(EVENT, None)
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    print(json.dumps({"status": response["statusCode"], "headers": headers}))
"""


def test_cors_preflight_is_answered_by_the_app_from_the_deployed_setting(
    api_registry: Path, tmp_path: Path
):
    """API Gateway passes OPTIONS on without a key; `-c cors_origins=...` sets API_CORS_ORIGINS,
    and the app's answer follows it."""
    env = {
        "MODEL_URI": str(api_registry),
        "WASTESORT_CACHE_DIR": str(tmp_path / "cache"),
        "API_CORS_ORIGINS": "https://app.example.com,https://admin.example.com:8443",
    }
    out = run_python(PREFLIGHT, env, preflight_event("https://app.example.com"), tmp_path)
    assert out["status"] == 200
    assert out["headers"]["access-control-allow-origin"] == "https://app.example.com"
    assert "x-api-key" in out["headers"]["access-control-allow-headers"]
    assert "POST" in out["headers"]["access-control-allow-methods"]
    stranger = run_python(PREFLIGHT, env, preflight_event("https://evil.example.net"), tmp_path)
    assert stranger["status"] == 400
    assert "access-control-allow-origin" not in stranger["headers"]


TRACE_ID = "Root=1-6741f0aa-1a2b3c4d5e6f7a8b9c0d1e2f;Parent=53995c3f42cd8ad8;Sampled=1"


def test_with_xray_tracing_on_as_in_lambda(api_registry: Path, tmp_path: Path):
    """On Lambda (AWS_LAMBDA_FUNCTION_NAME set) the Tracer is active; requests still work.
    Segments go by UDP to the X-Ray daemon address, pointed at loopback here."""
    event = gateway_event(
        "v2", "POST", "/predict", body=sample_bytes("glass"), content_type="image/jpeg"
    )
    out = run_python(
        """
        from functions.api import observability
        from functions.api.handler import handler
        response = handler(EVENT, None)
        active = observability.tracer()
        print(json.dumps({"status": response["statusCode"],
                          "tracer": type(active).__name__, "disabled": active.disabled}))
        """,
        {
            "MODEL_URI": str(api_registry),
            "WASTESORT_CACHE_DIR": str(tmp_path / "cache"),
            "AWS_LAMBDA_FUNCTION_NAME": "wastesort-api",
            "LAMBDA_TASK_ROOT": str(tmp_path),
            "_X_AMZN_TRACE_ID": TRACE_ID,
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
            "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
        },
        event,
        tmp_path,
    )
    assert out == {"status": 200, "tracer": "Tracer", "disabled": False}
