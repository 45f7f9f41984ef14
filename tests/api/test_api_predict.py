"""`/predict`, `/health`, `/model/info` through an HTTP client: every input kind, every bad
input answered with the right 4xx problem (never a 500), metrics and logs."""

from __future__ import annotations

import base64
import json

import pytest
from starlette.testclient import TestClient

from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from functions.api.settings import Settings
from wastesort import Classifier

LABELS = {"cardboard", "glass", "metal", "paper", "plastic", "trash"}


def assert_prediction(body: dict, classifier: Classifier, image: bytes) -> None:
    expected = classifier.predict(image).to_dict()
    assert set(body) == {*expected, "latency_ms", "request_id"}
    assert {k: body[k] for k in expected} == expected
    assert set(body["all_confidences"]) == LABELS
    assert body["decision"] in (body["predicted_class"], "uncertain")


def assert_problem(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert body["type"] == PROBLEM_BASE + kind, body
    assert body["status"] == status
    assert body["title"] and body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


def test_multipart_upload(client: TestClient, classifier: Classifier, jpeg: bytes):
    response = client.post("/predict", files={"file": ("bottle.jpg", jpeg, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), classifier, jpeg)
    assert response.json()["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp"])
def test_raw_image_body_each_format(client: TestClient, classifier, kind: str, request):
    data = request.getfixturevalue(kind)
    response = client.post("/predict", content=data, headers={"content-type": f"image/{kind}"})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), classifier, data)


def test_json_base64_and_data_url(client: TestClient, classifier, png: bytes):
    encoded = base64.b64encode(png).decode()
    for payload in (
        {"image_base64": encoded},
        {"image_base64": f"data:image/png;base64,{encoded}"},
        {"image_base64": "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))},
        {"image_base64": base64.urlsafe_b64encode(png).decode().rstrip("=")},
    ):
        response = client.post("/predict", json=payload)
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), classifier, png)


def test_octet_stream_is_sniffed(client: TestClient, classifier, jpeg: bytes):
    response = client.post("/predict", files={"file": ("photo", jpeg, "application/octet-stream")})
    assert response.status_code == 200


def test_top_k_from_query_json_and_form(client: TestClient, jpeg: bytes):
    by_query = client.post("/predict?top_k=2", content=jpeg, headers={"content-type": "image/jpeg"})
    assert len(by_query.json()["all_confidences"]) == 2
    by_json = client.post(
        "/predict", json={"image_base64": base64.b64encode(jpeg).decode(), "top_k": 3}
    )
    assert len(by_json.json()["all_confidences"]) == 3
    by_form = client.post(
        "/predict", files={"file": ("a.jpg", jpeg, "image/jpeg")}, data={"top_k": "1"}
    )
    assert list(by_form.json()["all_confidences"]) == [by_form.json()["predicted_class"]]
    bad = client.post("/predict?top_k=0", content=jpeg, headers={"content-type": "image/jpeg"})
    assert_problem(bad, 422, "validation-error")


def test_uncertain_below_the_recorded_threshold(client: TestClient, jpeg: bytes):
    # The tiny model is close to uniform over 6 classes; its manifest threshold is 0.5.
    body = client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"}).json()
    assert body["confidence"] < 0.5
    assert body["decision"] == "uncertain"


# --- bad inputs: always a 4xx problem --------------------------------------------------------


def truncated(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 2]


@pytest.mark.parametrize(
    ("make_request", "status", "kind"),
    [
        # wrong type of body, or of part
        (
            lambda c, i: c.post(
                "/predict", content=b"hello", headers={"content-type": "text/plain"}
            ),
            415,
            "unsupported-media-type",
        ),
        (
            lambda c, i: c.post("/predict", files={"file": ("a.txt", b"hello", "text/plain")}),
            415,
            "unsupported-media-type",
        ),
        (
            lambda c, i: c.post(
                "/predict", content=i["jpeg"], headers={"content-type": "image/gif"}
            ),
            415,
            "unsupported-media-type",
        ),
        # a lying content type
        (
            lambda c, i: c.post("/predict", files={"file": ("a.jpg", i["png"], "image/jpeg")}),
            415,
            "content-type-mismatch",
        ),
        (
            lambda c, i: c.post(
                "/predict", content=i["jpeg"], headers={"content-type": "image/webp"}
            ),
            415,
            "content-type-mismatch",
        ),
        (
            lambda c, i: c.post(
                "/predict",
                json={
                    "image_base64": "data:image/png;base64," + base64.b64encode(i["jpeg"]).decode()
                },
            ),
            415,
            "content-type-mismatch",
        ),
        # not an image at all, declared as one
        (
            lambda c, i: c.post(
                "/predict",
                content=b"<?php system($_GET[1]);",
                headers={"content-type": "image/jpeg"},
            ),
            400,
            "not-an-image",
        ),
        (
            lambda c, i: c.post(
                "/predict", files={"file": ("x.bmp", b"BM" + b"\0" * 64, "image/png")}
            ),
            400,
            "not-an-image",
        ),
        # zero bytes, three ways
        (
            lambda c, i: c.post("/predict", content=b"", headers={"content-type": "image/jpeg"}),
            400,
            "empty-image",
        ),
        (
            lambda c, i: c.post("/predict", files={"file": ("a.jpg", b"", "image/jpeg")}),
            400,
            "empty-image",
        ),
        (lambda c, i: c.post("/predict", json={"image_base64": ""}), 400, "empty-image"),
        # a truncated JPEG
        (
            lambda c, i: c.post(
                "/predict", content=truncated(i["jpeg"]), headers={"content-type": "image/jpeg"}
            ),
            400,
            "corrupt-image",
        ),
        # a 50-megapixel PNG
        (
            lambda c, i: c.post(
                "/predict", files={"file": ("big.png", i["huge_png"], "image/png")}
            ),
            400,
            "too-many-pixels",
        ),
        # base64 garbage
        (
            lambda c, i: c.post("/predict", json={"image_base64": "not*base64!!"}),
            400,
            "invalid-base64",
        ),
        (
            lambda c, i: c.post("/predict", json={"image_base64": "data:image/png,abc"}),
            400,
            "invalid-base64",
        ),
        (
            lambda c, i: c.post(
                "/predict", json={"image_base64": base64.b64encode(b"hi").decode()}
            ),
            400,
            "not-an-image",
        ),
        # malformed or invalid requests
        (
            lambda c, i: c.post(
                "/predict", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
            "malformed-request",
        ),
        (  # JSON the decoder refuses past its limits: a huge integer, deep nesting
            lambda c, i: c.post(
                "/predict",
                content=b'{"image_base64": "aaaa", "top_k": 1' + b"0" * 5000 + b"}",
                headers={"content-type": "application/json"},
            ),
            400,
            "malformed-request",
        ),
        (
            lambda c, i: c.post(
                "/predict/batch",
                content=b"[" * 100_000,
                headers={"content-type": "application/json"},
            ),
            400,
            "malformed-request",
        ),
        (lambda c, i: c.post("/predict", json={"image": "x"}), 422, "validation-error"),
        (
            lambda c, i: c.post("/predict", json={"image_base64": "x", "image_url": "https://a"}),
            422,
            "validation-error",
        ),
        (lambda c, i: c.post("/predict", json=[1, 2]), 422, "validation-error"),
        (
            lambda c, i: c.post("/predict", files={"other": ("a.jpg", i["jpeg"], "image/jpeg")}),
            422,
            "validation-error",
        ),
        (
            lambda c, i: c.post(
                "/predict",
                content=b"--x\r\nbroken",
                headers={"content-type": "multipart/form-data"},
            ),
            400,
            "malformed-request",
        ),
        (lambda c, i: c.get("/predict"), 405, "method-not-allowed"),
        (lambda c, i: c.get("/nope"), 404, "not-found"),
    ],
)
def test_bad_input_is_a_4xx_problem(client: TestClient, make_request, status, kind, request):
    images = {name: request.getfixturevalue(name) for name in ("jpeg", "png", "huge_png")}
    assert_problem(make_request(client, images), status, kind)


# --- images the core refuses, said in the API's words (issue 31, defect 8) ---------------------


def png_header(data: bytes, width: int, height: int, *, fix_crc: bool = True) -> bytes:
    """A PNG whose IHDR claims width x height (its CRC recomputed unless `fix_crc` is off)."""
    import struct
    import zlib

    patched = bytearray(data)
    struct.pack_into(">II", patched, 16, width, height)
    crc = zlib.crc32(bytes(patched[12:29])) if fix_crc else 0xDEADBEEF
    struct.pack_into(">I", patched, 29, crc)
    return bytes(patched)


def small(fmt: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "orange").save(buffer, format=fmt)
    return buffer.getvalue()


def test_png_with_a_bad_header_crc_is_corrupt_not_another_format(client: TestClient):
    """It is a PNG, so `not-an-image` (with Pillow's "BMP or GIF expected") was wrong."""
    bad = png_header(small("PNG"), 64, 48, fix_crc=False)
    for response in (
        client.post("/predict", content=bad, headers={"content-type": "image/png"}),
        client.post("/predict", files={"file": ("a.png", bad, "image/png")}),
    ):
        body = assert_problem(response, 400, "corrupt-image")
        assert "PNG" in body["detail"] and "GIF" not in body["detail"]
        assert "BMP" not in body["detail"]


def test_jpeg_claiming_6000x6000_without_the_data_is_refused(client: TestClient):
    import struct

    data = bytearray(small("JPEG"))
    struct.pack_into(">HH", data, data.find(b"\xff\xc0") + 5, 6000, 6000)
    response = client.post("/predict", content=bytes(data), headers={"content-type": "image/jpeg"})
    body = assert_problem(response, 400, "corrupt-image")
    assert "truncated" in body["detail"]
    batch = client.post("/predict/batch", files=[("files", ("a.jpg", bytes(data), "image/jpeg"))])
    assert batch.json()["results"][0]["problem"]["type"] == PROBLEM_BASE + "corrupt-image"


@pytest.mark.parametrize(
    ("max_pixels", "width", "height"),
    [
        (1_000_000, 2000, 1000),  # over API_MAX_PIXELS, under Pillow's own limit
        (None, 20_000, 10_000),  # over Pillow's "decompression bomb" limit (178,956,970) too
    ],
)
def test_the_pixel_limit_is_the_apis_own_in_its_own_words(
    make_client, api_registry, max_pixels: int | None, width: int, height: int
):
    limit = max_pixels or Settings(model_uri="unused").max_pixels
    client = make_client(classifier_=None, model_uri=str(api_registry), max_pixels=limit)
    image = png_header(small("PNG"), width, height)
    response = client.post("/predict", content=image, headers={"content-type": "image/png"})
    body = assert_problem(response, 400, "too-many-pixels")
    assert f"the limit is {limit:,}" in body["detail"]
    assert "bomb" not in body["detail"].lower() and "178956970" not in body["detail"]


def test_validation_problem_is_one_line_without_the_body(client: TestClient):
    """The detail is worded by `wastesort.validation` (one line, no values: they are the
    caller's request); `errors` keeps its machine-readable shape."""
    secret = "x" * 40
    body = assert_problem(
        client.post("/predict", json={"image": secret, "top_k": 0}), 422, "validation-error"
    )
    detail = body["detail"]
    assert detail.startswith("the JSON body is not valid: ") and "\n" not in detail
    assert "image: unknown key" in detail and "top_k: " in detail and secret not in detail
    extra = {"loc": ["image"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
    assert extra in body["errors"]


def test_405_says_what_is_allowed(client: TestClient):
    assert client.get("/predict").headers["allow"] == "POST"


def test_oversized_body_with_and_without_content_length(make_client, jpeg: bytes):
    client = make_client(max_body_bytes=64 * 1024)
    big = jpeg + b"\0" * (64 * 1024)
    declared = client.post("/predict", content=big, headers={"content-type": "image/jpeg"})
    assert_problem(declared, 413, "payload-too-large")

    def chunks():  # chunked transfer: no Content-Length, the cap applies while streaming
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = client.post("/predict", content=chunks(), headers={"content-type": "image/jpeg"})
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413, "payload-too-large")
    assert streamed.json()["limit"] == 64 * 1024


def test_default_limit_leaves_room_for_base64_in_the_lambda_event(client: TestClient):
    """4 MiB: base64 in API Gateway's event makes it 5.33 MiB, under Lambda's 6 MB."""
    assert Settings(model_uri="unused").max_body_bytes == 4 * 1024 * 1024
    body = b"\xff\xd8\xff" + b"\0" * (4 * 1024 * 1024)
    response = client.post("/predict", content=body, headers={"content-type": "image/jpeg"})
    assert assert_problem(response, 413, "payload-too-large")["limit"] == 4 * 1024 * 1024


def test_unexpected_error_is_a_500_problem_without_traceback(make_client, jpeg: bytes):
    class Broken:
        version = "broken-1"

        def predict(self, *args, **kwargs):
            raise RuntimeError("secret internals /var/task/wastesort/classifier.py")

    client = make_client(classifier_=Broken())
    response = client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"})
    body = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.text and "classifier.py" not in response.text
    assert body["request_id"]


# --- health, info, model failures --------------------------------------------------------------


def test_health_and_model_info(client: TestClient, classifier: Classifier):
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["model_version"] == "tiny-1"
    assert body["sha256"] == classifier.entry.sha256
    assert body["runtime"]["name"] == "ai-edge-litert"
    assert body["uptime_s"] >= 0
    info = client.get("/model/info").json()
    assert info["version"] == "tiny-1" and info["labels"] == classifier.labels
    assert info["input"]["height"] == 48 and info["input"]["width"] == 64
    assert info["sha256"] == classifier.entry.sha256
    assert info["metrics"] == {"accuracy": 0.5}
    assert info["created_at"] and info["uncertain_threshold"] == 0.5
    assert info["temperature"] == 1.0 and info["runtime"] == body["runtime"]


def test_model_info_is_a_card_not_the_manifest_entry(make_client, tmp_path, tiny_int8):
    """Callers get what they need to use the answers; the training config (data paths, cache
    dir), the MLflow run, the golden images and their scores stay with the registry CLI."""
    import subprocess
    import sys

    from tests.conftest import ROOT, sample_bytes, tiny_fields
    from wastesort.registry import GoldenSample, Registry

    root = tmp_path / "registry"
    private = {
        "data": {"root": "/srv/private/trashnet-raw"},
        "cache_dir": "/home/trainer/.cache/keras-private",
    }
    Registry.from_uri(root, cache_dir=tmp_path / "cache").publish(
        tiny_int8,
        version="card-1",
        golden=[GoldenSample("glass.jpg", sample_bytes("glass"), "glass")],
        mlflow_run_id="f00dfeedcafe4242",
        dataset_fingerprint="d" * 64,
        source_config=private,
        **tiny_fields(uncertain_threshold=0.4, temperature=1.5),
    )
    response = make_client(classifier_=None, model_uri=f"{root}@card-1").get("/model/info")
    assert response.status_code == 200, response.text
    info = response.json()
    assert set(info) == {
        "version",
        "created_at",
        "labels",
        "input",
        "metrics",
        "uncertain_threshold",
        "temperature",
        "sha256",
        "runtime",
    }
    assert (info["version"], info["uncertain_threshold"], info["temperature"]) == (
        "card-1",
        0.4,
        1.5,
    )
    for private_value in (
        "trashnet-raw",
        "keras-private",
        "f00dfeedcafe4242",
        "d" * 64,
        "golden",
        "glass.jpg",
        "artifacts/",
    ):
        assert private_value not in response.text, private_value
    command = [sys.executable, "-m", "wastesort", "registry", "--registry", str(root), "--json"]
    shown = subprocess.run(
        [*command, "show", "card-1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert "f00dfeedcafe4242" in shown.stdout and "trashnet-raw" in shown.stdout


def test_model_that_cannot_load_answers_503_then_recovers(
    make_client, tmp_path, tiny_int8, jpeg: bytes
):
    from tests.conftest import tiny_fields
    from wastesort.registry import Registry

    root = tmp_path / "later"
    client = make_client(classifier_=None, model_uri=f"{root}@v1", model_retry_s=0)
    health = client.get("/health")
    body = assert_problem(health, 503, "model-unavailable")
    assert "registry could not be read" in body["detail"] and health.headers["retry-after"]
    assert body["code"] == "registry_error" and str(tmp_path) not in health.text
    assert_problem(
        client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"}),
        503,
        "model-unavailable",
    )
    Registry.from_uri(root, cache_dir=tmp_path / "c").publish(
        tiny_int8, version="v1", **tiny_fields()
    )
    assert client.get("/health").json()["model_version"] == "v1"  # retried, no restart


def test_wrong_sha256_is_refused_with_the_reason(make_client, api_registry):
    client = make_client(classifier_=None, model_uri=str(api_registry), model_sha256="ab" * 32)
    body = assert_problem(client.get("/health"), 503, "model-unavailable")
    assert body["code"] == "integrity_error"


@pytest.mark.parametrize(
    "model_uri",
    ["https://user:secret@models.example.com/registry@v3", "/srv/private-models/registry@v3"],
)
def test_model_unavailable_says_what_failed_not_where(
    make_client, jpeg: bytes, model_uri: str, capfd, caplog
):
    """MODEL_URI names hosts, buckets and paths, and a URL in it may carry a password: callers
    are told what failed, the log says where (its credentials redacted)."""
    location = model_uri.removesuffix("@v3").replace("user:secret@", "***@")
    client = make_client(classifier_=None, model_uri=model_uri)
    answers = [
        client.get("/health"),
        client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"}),
    ]
    for response in answers:
        body = assert_problem(response, 503, "model-unavailable")
        assert body["detail"].startswith("the model is not loaded: ")
        assert body["code"] == "registry_error"
        for leak in ("secret", "user:", "example.com", "private-models", "registry@"):
            assert leak not in response.text, leak
    logs = capfd.readouterr().out + "".join(str(r.__dict__) for r in caplog.records)
    assert location in logs and "secret" not in logs  # the log keeps where, redacted


def test_an_unexpected_load_failure_is_redacted_too(make_client, monkeypatch, capfd, caplog):
    from functions.api import model as model_module

    def explode(uri: str, **kwargs):
        raise RuntimeError(f"could not open {uri}")

    monkeypatch.setattr(model_module.Classifier, "load", explode)
    client = make_client(classifier_=None, model_uri="https://ops:hunter2@models.example.com/r")
    body = assert_problem(client.get("/health"), 503, "model-unavailable")
    assert body["code"] == "load_failed" and "example.com" not in body["detail"]
    logs = capfd.readouterr().out + "".join(str(r.__dict__) for r in caplog.records)
    assert "https://***@models.example.com/r" in logs and "Traceback" in logs
    assert "hunter2" not in logs


def test_redact_removes_the_userinfo_of_every_url():
    from functions.api.model import redact

    text = "cannot read https://u:p@h/x and s3://AKIA:sk@bucket/p, not a@b.c or /a@v1"
    assert redact(text) == "cannot read https://***@h/x and s3://***@bucket/p, not a@b.c or /a@v1"
    assert redact("https://u:p@ss@host/r@v3 failed") == "https://***@host/r@v3 failed"


# --- observability ---------------------------------------------------------------------------


def test_emf_metrics_and_logs_never_hold_image_bytes(
    client: TestClient, jpeg: bytes, capfd, caplog
):
    client.post("/predict", content=jpeg, headers={"content-type": "image/jpeg"})
    client.post("/predict", content=b"", headers={"content-type": "image/jpeg"})
    out = capfd.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    main = next(b for b in emf if "PredictLatency" in b)
    directive = main["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Wastesort"
    assert directive["Dimensions"] == [["model_version", "service"]]
    assert {m["Name"] for m in directive["Metrics"]} == {
        "PredictLatency",
        "Predictions",
        "UncertainPredictions",
    }
    assert main["model_version"] == "tiny-1" and main["service"] == "wastesort-api"
    assert any("PredictionsByClass" in b and b["class"] in LABELS for b in emf)
    rejected = next(b for b in emf if "RejectedInputs" in b)
    assert rejected["error_type"] == "empty-image"
    assert not any("PredictionErrors" in b for b in emf)  # bad input is not a model failure
    logs = [r.__dict__ for r in caplog.records if r.getMessage() == "prediction"]
    assert logs and logs[0]["request_id"] and logs[0]["predicted_class"] in LABELS
    assert logs[0]["latency_ms"] > 0 and logs[0]["model_version"] == "tiny-1"
    text = out + "".join(str(r.__dict__) for r in caplog.records)
    assert base64.b64encode(jpeg[:64]).decode()[:40] not in text
    assert repr(jpeg[:16])[2:-1] not in text


def test_cors_off_by_default_and_configurable(make_client, jpeg: bytes):
    origin = {"origin": "https://app.example.com"}
    assert "access-control-allow-origin" not in make_client().get("/health", headers=origin).headers
    client = make_client(cors_origins="https://app.example.com")
    preflight = client.options(
        "/predict",
        headers={**origin, "access-control-request-method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"


def test_openapi_documents_every_endpoint_and_problem(client: TestClient):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/model/info"} <= set(spec["paths"])
    predict = spec["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/jpeg", "application/json"} <= set(
        predict["requestBody"]["content"]
    )
    for status in ("400", "413", "415", "422", "503", "500"):
        assert predict["responses"][status]["content"][MEDIA_TYPE]["examples"], status
    for path, method in (
        ("/predict", "post"),
        ("/predict/batch", "post"),
        ("/health", "get"),
        ("/model/info", "get"),
    ):
        answers = spec["paths"][path][method]["responses"]
        assert answers["200"]["content"]["application/json"]["example"], path
        assert answers["503"]["content"][MEDIA_TYPE]["examples"], path
    assert client.get("/docs").status_code == 200


def test_api_answers_what_the_cli_answers(client: TestClient, api_registry):
    """The DESIGN contract: `/predict` gives the CLI's fields, with the same values."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = ROOT / "samples/paper/paper8.jpg"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "wastesort",
            "classify",
            str(path),
            "--model",
            str(api_registry),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    cli = json.loads(run.stdout.strip().splitlines()[-1])
    api = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
    body = api.json()
    assert {k: body[k] for k in cli if k != "path"} == {k: v for k, v in cli.items() if k != "path"}
