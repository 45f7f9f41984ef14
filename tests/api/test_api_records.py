"""Prediction records behind the API (issue 37 §0): a sampled share of single and batch
predictions lands under `records/` with every confidence and the projected embedding, batched
and bounded, and a store that cannot be written never fails an answer."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from functions.api.app import create_app
from functions.api.records import Recorder
from tests.api.conftest import gateway_event, make_settings
from tests.api.test_api_capture import BUCKET, s3  # noqa: F401 (a fixture)
from tests.api.test_api_lambda import FakeContext
from tests.conftest import sample_bytes
from tests.core.test_reference import referenced_registry  # noqa: F401 (a fixture)
from wastesort import Classifier, reference
from wastesort.errors import RegistryError
from wastesort.records import read_records
from wastesort.registry.local import LocalStore

Client = Callable[..., TestClient]
SINCE = datetime.now(UTC) - timedelta(minutes=5)


def post(client: TestClient, data: bytes) -> dict:
    response = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return response.json()


def stored(root: Path) -> list[dict]:
    return list(read_records(LocalStore(root), since=SINCE))


@pytest.fixture
def referenced(referenced_registry: Path, tmp_path: Path) -> Classifier:  # noqa: F811
    return Classifier.load(referenced_registry, cache_dir=tmp_path / "cache")


def test_every_prediction_is_recorded_with_its_embedding_when_the_share_is_one(
    make_client: Client, referenced: Classifier, tmp_path: Path
):
    root = tmp_path / "store"
    client = make_client(referenced, record_uri=str(root), record_sample=1, record_batch=2)
    answers = [post(client, sample_bytes(name)) for name in ("glass", "paper", "metal")]
    kept = stored(root)
    assert len(kept) == 2  # one full batch written; the third waits for the next
    first = kept[0]
    assert first["source"] == "api" and first["model_version"] == "tiny-2"
    assert first["all_confidences"] == answers[0]["all_confidences"]
    assert len(first["embedding"]) == referenced.reference.dims
    assert set(first["image_stats"]) == set(reference.STATS)
    assert "image" not in first and "client_ip" not in json.dumps(first)
    client.app.state.recorder.flush()
    assert len(stored(root)) == 3


def test_batch_predictions_are_recorded_too_and_bad_images_are_not(
    make_client: Client, referenced: Classifier, tmp_path: Path
):
    root = tmp_path / "store"
    client = make_client(referenced, record_uri=str(root), record_sample=1, record_batch=1)
    files = [
        ("files", ("a.jpg", sample_bytes("glass"), "image/jpeg")),
        ("files", ("b.jpg", b"not an image", "image/jpeg")),
        ("files", ("c.jpg", sample_bytes("paper"), "image/jpeg")),
    ]
    answer = client.post("/predict/batch", files=files).json()
    assert answer["succeeded"] == 2
    kept = stored(root)
    dims = referenced.reference.dims
    assert len(kept) == 2 and all(len(r["embedding"]) == dims for r in kept)


def test_a_top_k_answer_is_cut_but_its_record_keeps_every_confidence(
    make_client: Client, referenced: Classifier, tmp_path: Path
):
    root = tmp_path / "store"
    client = make_client(
        referenced, record_uri=str(root), record_sample=1, record_batch=1, default_top_k=1
    )
    response = client.post(
        "/predict?top_k=2", content=sample_bytes("glass"), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    single = response.json()
    assert len(single["all_confidences"]) == 2
    files = [("files", ("a.jpg", sample_bytes("paper"), "image/jpeg"))]
    batch = client.post("/predict/batch", files=files).json()  # API_DEFAULT_TOP_K: 1
    assert len(batch["results"][0]["all_confidences"]) == 1
    kept = stored(root)
    assert len(kept) == 2
    for record in kept:
        assert set(record["all_confidences"]) == set(referenced.labels)
        assert sum(record["all_confidences"].values()) == pytest.approx(1, abs=1e-3)
    best_two = [dict(list(r["all_confidences"].items())[:2]) for r in kept]
    assert single["all_confidences"] in best_two  # the answer is its record's best two


def test_a_share_of_zero_records_nothing(
    make_client: Client, classifier: Classifier, jpeg: bytes, tmp_path: Path
):
    root = tmp_path / "store"
    client = make_client(classifier, record_uri=str(root), record_sample=0, record_batch=1)
    for _ in range(5):
        post(client, jpeg)
    assert not client.app.state.recorder.enabled
    assert not (root / "records").exists()


def test_the_share_is_a_uniform_sample_and_records_go_beside_the_captures(
    classifier: Classifier, jpeg: bytes, tmp_path: Path
):
    root = tmp_path / "captures"
    settings = make_settings(capture_uri=str(root), capture_sample=0, record_sample=0.25)
    recorder = Recorder(settings, rng=random.Random(7))
    app = create_app(settings, classifier=classifier, recorder=recorder, load_on_startup=False)
    with TestClient(app) as client:  # the lifespan's shutdown writes what waits
        for _ in range(40):
            post(client, jpeg)
    again = random.Random(7)
    expected = sum(again.random() < 0.25 for _ in range(40))
    assert 4 <= len(stored(root)) == expected <= 16


class DownStore(LocalStore):
    def put_new(self, key: str, source: bytes | Path) -> bool:
        raise RegistryError("the store is down")


def test_a_failing_store_never_fails_a_request_and_is_counted(
    classifier: Classifier, jpeg: bytes, tmp_path: Path, capfd, caplog
):
    settings = make_settings(record_sample=1, record_batch=1, record_max_pending=2)
    recorder = Recorder(settings, store=DownStore(tmp_path))
    app = create_app(settings, classifier=classifier, recorder=recorder, load_on_startup=False)
    client = TestClient(app, raise_server_exceptions=False)
    for _ in range(4):
        post(client, jpeg)
    out = capfd.readouterr().out
    assert "RecordFailures" in out and "RecordsDropped" in out
    assert "PredictionErrors" not in out
    assert "cannot write" in caplog.text
    assert recorder.batcher is not None and len(recorder.batcher) == 2  # bounded


def test_a_uri_that_names_no_store_turns_records_off_not_the_api(
    make_client: Client, classifier: Classifier, jpeg: bytes
):
    for uri in ("ftp://nowhere/x", "s3:///no-bucket"):
        client = make_client(classifier, record_uri=uri, record_sample=1)
        assert post(client, jpeg)["predicted_class"]
        assert not client.app.state.recorder.enabled


@pytest.fixture
def lambda_loop() -> Iterator[None]:
    yield
    loop = asyncio.get_event_loop_policy().get_event_loop()
    asyncio.set_event_loop(None)
    loop.close()


def test_on_lambda_records_are_written_only_when_the_batch_is_due(
    referenced: Classifier,
    jpeg: bytes,
    s3,  # noqa: F811
    lambda_loop: None,
):
    from mangum import Mangum

    def handler(batch: int, bucket: str = BUCKET) -> Mangum:
        settings = make_settings(
            record_uri=f"s3://{bucket}/lake", record_sample=1, record_batch=batch,
            capture_timeout_s=0.5,
        )  # fmt: skip
        app = create_app(settings, classifier=referenced, load_on_startup=False)
        return Mangum(app, lifespan="off")

    event = gateway_event("v2", "POST", "/predict", body=jpeg, content_type="image/jpeg")
    waiting = handler(batch=5)
    assert waiting(event, FakeContext())["statusCode"] == 200
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)  # not due: no S3 call paid
    assert handler(batch=1)(event, FakeContext())["statusCode"] == 200
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("lake/records/api/")
    line = json.loads(s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read())
    assert len(line["embedding"]) == referenced.reference.dims
    gone = handler(batch=1, bucket="no-such-bucket-37")(event, FakeContext())
    assert gone["statusCode"] == 200
