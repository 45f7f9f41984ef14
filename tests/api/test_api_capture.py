"""Capture behind the API and `POST /feedback` (issue 35 §2-3): what is kept, what leaves the
caller (no metadata), and that a store that cannot be written never fails a prediction."""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from PIL import Image
from starlette.testclient import TestClient

from functions.api.capture import Capturer
from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from tests.api.conftest import gateway_event, make_settings
from tests.api.test_api_lambda import FakeContext
from tests.core.test_capture import gps_jpeg
from wastesort import Classifier
from wastesort.capture import CaptureStore, parse_id

BUCKET = "wastesort-test-api-captures"
Client = Callable[..., TestClient]


@pytest.fixture(scope="module")
def unsure(api_registry: Path) -> Classifier:
    """The tiny model with a threshold no answer reaches: every decision is `uncertain`."""
    return Classifier.load(
        api_registry, cache_dir=api_registry.parent / "cache", uncertain_threshold=1.0
    )


@pytest.fixture(scope="module")
def sure(api_registry: Path) -> Classifier:
    """The tiny model with threshold 0: every decision is a class."""
    return Classifier.load(
        api_registry, cache_dir=api_registry.parent / "cache", uncertain_threshold=0.0
    )


def captured(root: Path) -> list[str]:
    return sorted(p.stem for p in root.rglob("*.json") if "captures" in p.parts)


def post(client: TestClient, data: bytes) -> dict:
    response = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return response.json()


# --- capture on /predict ----------------------------------------------------------------------


def test_capture_is_off_unless_configured(make_client: Client, unsure: Classifier, jpeg: bytes):
    client = make_client(unsure)
    assert "capture_id" not in post(client, jpeg)
    response = client.post("/feedback", json={"capture_id": "x", "label": "glass"})
    assert response.status_code == 409 and response.json()["type"] == PROBLEM_BASE + "capture-off"
    assert "/feedback" not in client.get("/openapi.json").json()["paths"]


def test_every_uncertain_prediction_is_captured(
    make_client: Client, unsure: Classifier, jpeg: bytes, tmp_path: Path
):
    client = make_client(unsure, capture_uri=str(tmp_path), capture_sample=0.0)
    ids = [post(client, jpeg)["capture_id"] for _ in range(5)]
    assert captured(tmp_path) == sorted(ids)
    store = CaptureStore.from_uri(str(tmp_path))
    record = store.record(ids[0])
    assert record.reason == "uncertain" and record.decision == "uncertain"
    assert record.source == "api" and parse_id(ids[0])[1] == "api"
    assert "/feedback" in client.get("/openapi.json").json()["paths"]


def test_a_batch_captures_its_uncertain_images_and_skips_its_bad_ones(
    make_client: Client, unsure: Classifier, jpeg: bytes, tmp_path: Path
):
    """Each answered image of a batch is judged like a /predict; a bad one takes no capture and
    does not shift the others' photos."""
    client = make_client(unsure, capture_uri=str(tmp_path), capture_sample=0.0)
    files = [
        ("files", ("a.jpg", jpeg, "image/jpeg")),
        ("files", ("bad.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
        ("files", ("c.jpg", jpeg, "image/jpeg")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 400, 200]
    assert results[1].get("capture_id") is None
    ids = [results[0]["capture_id"], results[2]["capture_id"]]
    assert captured(tmp_path) == sorted(ids)
    store = CaptureStore.from_uri(str(tmp_path))
    assert store.record(ids[0]).sha256 == store.record(ids[1]).sha256  # the same photo twice


def test_a_seeded_fraction_of_decided_predictions_is_captured(
    make_client: Client, sure: Classifier, jpeg: bytes, tmp_path: Path
):
    settings = make_settings(capture_uri=str(tmp_path), capture_sample=0.25)
    capturer = Capturer(settings, rng=random.Random(35))
    client = make_client(sure, capturer=capturer, capture_uri=str(tmp_path))
    answers = [post(client, jpeg) for _ in range(160)]
    ids = [a["capture_id"] for a in answers if "capture_id" in a]
    assert 25 <= len(ids) <= 55  # 40 expected
    assert captured(tmp_path) == sorted(ids)
    assert {CaptureStore.from_uri(str(tmp_path)).record(i).reason for i in ids} == {"sampled"}


def test_gps_exif_in_none_out(make_client: Client, unsure: Classifier, tmp_path: Path):
    client = make_client(unsure, capture_uri=str(tmp_path))
    capture_id = post(client, gps_jpeg())["capture_id"]
    stored = Image.open(io.BytesIO(CaptureStore.from_uri(str(tmp_path)).image(capture_id)))
    assert not stored.getexif() and "exif" not in stored.info and max(stored.size) <= 1024
    record = json.loads(next(tmp_path.rglob(f"{capture_id}.json")).read_text())
    assert not {"ip", "client", "api_key", "x-api-key", "source_ip"} & set(record)


@pytest.fixture
def unwritable(tmp_path: Path) -> str:
    """A capture URI no folder can be made at (under a regular file)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return str(blocker / "captures")


def test_an_unwritable_folder_never_fails_a_prediction(
    make_client: Client, unsure: Classifier, unwritable: str, capfd, caplog
):
    client = make_client(unsure, capture_uri=unwritable)
    jpeg = gps_jpeg((64, 48))
    assert post(client, jpeg)["decision"] == "uncertain"
    out = capfd.readouterr().out
    assert "CaptureFailures" in out and "capture failed" in caplog.text
    assert "PredictionErrors" not in out


@pytest.fixture
def s3() -> Iterator[object]:
    with mock_aws(), pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield client


def test_captures_on_s3_and_an_unreachable_bucket_never_fails(
    make_client: Client, unsure: Classifier, jpeg: bytes, s3, capfd
):
    client = make_client(unsure, capture_uri=f"s3://{BUCKET}/field", capture_timeout_s=0.5)
    capture_id = post(client, jpeg)["capture_id"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert {k.rsplit("/", 1)[-1] for k in keys} == {f"{capture_id}.jpg", f"{capture_id}.json"}
    gone = make_client(unsure, capture_uri="s3://no-such-bucket-35/field")
    assert post(gone, jpeg)["capture_id"]
    assert "CaptureFailures" in capfd.readouterr().out


# --- POST /feedback -------------------------------------------------------------------------


@pytest.fixture
def on(make_client: Client, unsure: Classifier, tmp_path: Path) -> TestClient:
    return make_client(unsure, capture_uri=str(tmp_path / "store"))


def problem(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.json()["type"] == PROBLEM_BASE + kind


def test_feedback_on_a_captured_photo(on: TestClient, jpeg: bytes, tmp_path: Path):
    capture_id = post(on, jpeg)["capture_id"]
    response = on.post("/feedback", json={"capture_id": capture_id, "label": "metal"})
    assert response.status_code == 202, response.text
    assert response.json()["capture_id"] == capture_id
    on.post("/feedback", json={"capture_id": capture_id, "label": "not_waste"})
    labels = CaptureStore.from_uri(str(tmp_path / "store")).labels(capture_id)
    assert [(e.label, e.source) for e in labels] == [
        ("metal", "feedback"),
        ("not_waste", "feedback"),
    ]


def test_feedback_with_a_new_photo_captures_it(on: TestClient, tmp_path: Path):
    files = {"file": ("bin.jpg", gps_jpeg((320, 240)), "image/jpeg")}
    response = on.post("/feedback", files=files, data={"label": "glass"})
    assert response.status_code == 202, response.text
    capture_id = response.json()["capture_id"]
    store = CaptureStore.from_uri(str(tmp_path / "store"))
    assert store.record(capture_id).reason == "feedback"
    assert [e.label for e in store.labels(capture_id)] == ["glass"]
    assert not Image.open(io.BytesIO(store.image(capture_id))).getexif()


def test_feedback_problems(on: TestClient, jpeg: bytes):
    capture_id = post(on, jpeg)["capture_id"]
    problem(
        on.post("/feedback", json={"capture_id": capture_id, "label": "bottle"}),
        422,
        "unknown-label",
    )
    unknown = "20261205T103000Z-0123456789ab-api"
    problem(
        on.post("/feedback", json={"capture_id": unknown, "label": "glass"}), 404, "unknown-capture"
    )
    problem(
        on.post("/feedback", json={"capture_id": "../x", "label": "glass"}), 404, "unknown-capture"
    )
    problem(on.post("/feedback", json={"capture_id": capture_id}), 422, "validation-error")
    problem(
        on.post("/feedback", json={"capture_id": capture_id, "label": "glass", "x": 1}),
        422,
        "validation-error",
    )
    problem(
        on.post("/feedback", content=b"{", headers={"content-type": "application/json"}),
        400,
        "malformed-request",
    )
    problem(
        on.post("/feedback", content=jpeg, headers={"content-type": "image/jpeg"}),
        415,
        "unsupported-media-type",
    )
    files = {"file": ("x.jpg", jpeg, "image/jpeg")}
    problem(on.post("/feedback", files=files), 422, "validation-error")  # no label
    problem(on.post("/feedback", files=files, data={"label": "bottle"}), 422, "unknown-label")
    bad = {"file": ("x.jpg", b"not an image", "image/jpeg")}
    problem(on.post("/feedback", files=bad, data={"label": "glass"}), 400, "not-an-image")


def test_feedback_when_the_store_fails_is_a_503_not_a_prediction_error(
    make_client: Client, unsure: Classifier, jpeg: bytes, unwritable: str, capfd
):
    client = make_client(unsure, capture_uri=unwritable)
    files = {"file": ("x.jpg", jpeg, "image/jpeg")}
    response = client.post("/feedback", files=files, data={"label": "glass"})
    problem(response, 503, "capture-unavailable")
    assert response.headers["retry-after"]
    assert "PredictionErrors" not in capfd.readouterr().out


def test_on_lambda_the_capture_is_written_before_the_handler_returns(
    unsure: Classifier, jpeg: bytes, s3
):
    """Mangum runs background tasks before it returns: the photo is in S3 when the invocation
    ends, and an unreachable bucket still answers 200 (bounded, one attempt)."""
    from mangum import Mangum

    from functions.api.app import create_app

    def handler(uri: str) -> Mangum:
        settings = make_settings(capture_uri=uri, capture_timeout_s=0.5)
        app = create_app(settings, classifier=unsure, load_on_startup=False)
        return Mangum(app, lifespan="off")

    event = gateway_event("v2", "POST", "/predict", body=jpeg, content_type="image/jpeg")
    try:
        answer = handler(f"s3://{BUCKET}/lambda")(event, FakeContext())
        assert answer["statusCode"] == 200
        capture_id = json.loads(answer["body"])["capture_id"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert sorted(k.rsplit("/", 1)[-1] for k in keys) == [
            f"{capture_id}.jpg",
            f"{capture_id}.json",
        ]
        gone = handler("s3://no-such-bucket-35/lambda")(event, FakeContext())
        assert gone["statusCode"] == 200
    finally:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        asyncio.set_event_loop(None)
        loop.close()
