"""`/predict/batch` with good and bad images mixed, and concurrency: 32 requests at once give
exactly the answers they give one by one."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from starlette.testclient import TestClient

from functions.api.app import create_app
from functions.api.problems import PROBLEM_BASE
from tests.api.conftest import make_settings
from wastesort import Classifier


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_json_batch_mixed_good_and_bad(client: TestClient, classifier, jpeg, png, huge_png):
    images = [
        {"image_base64": b64(jpeg)},
        {"image_base64": "%%% not base64"},
        {"image_base64": b64(png)},
        {"image_url": "https://127.0.0.1/x.jpg"},
    ]
    response = client.post("/predict/batch", json={"images": images, "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (2, 2)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["status"] for r in results] == [200, 400, 200, 400]
    assert results[0]["predicted_class"] == classifier.predict(jpeg).predicted_class
    assert len(results[0]["all_confidences"]) == 2
    assert results[1]["problem"]["type"] == PROBLEM_BASE + "invalid-base64"
    assert results[3]["problem"]["type"] == PROBLEM_BASE + "url-not-allowed"
    assert body["model_version"] == "tiny-1" and body["request_id"]


def test_multipart_batch_with_core_errors_in_their_slots(
    client: TestClient, classifier, jpeg, png, huge_png
):
    files = [
        ("files", ("a.jpg", jpeg, "image/jpeg")),
        ("files", ("b.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")),
        ("files", ("c.png", huge_png, "image/png")),
        ("files", ("d.png", png, "image/jpeg")),
    ]
    body = client.post("/predict/batch", files=files).json()
    kinds = [
        r["problem"]["type"].removeprefix(PROBLEM_BASE) if r["problem"] else "ok"
        for r in body["results"]
    ]
    assert kinds == ["ok", "corrupt-image", "too-many-pixels", "content-type-mismatch"]
    expected = classifier.predict_batch([jpeg])[0]
    assert body["results"][0]["all_confidences"] == expected.all_confidences


def test_batch_limits(client: TestClient, jpeg: bytes):
    five = [{"image_base64": b64(jpeg)}] * 5  # batch_max is 4 in these tests
    response = client.post("/predict/batch", json={"images": five})
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEM_BASE + "too-many-images"
    files = [("files", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(5)]
    assert client.post("/predict/batch", files=files).json()["type"].endswith("too-many-images")
    assert client.post("/predict/batch", json={"images": []}).status_code == 422
    raw = client.post("/predict/batch", content=jpeg, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 415


def test_all_bad_batch_is_still_200_with_every_problem(client: TestClient):
    body = client.post("/predict/batch", json={"images": [{"image_base64": ""}]}).json()
    assert body["succeeded"] == 0 and body["results"][0]["status"] == 400


@pytest.mark.parametrize("pool_size", [1, 4])
def test_32_parallel_requests_equal_serial(
    api_registry, sample_images: list[bytes], png: bytes, webp: bytes, pool_size: int
):
    clf = Classifier.load(api_registry, cache_dir=api_registry.parent / "c", pool_size=pool_size)
    # All 32 admitted at once (the limit in flight would shed most: test_api_overload.py).
    app = create_app(make_settings(max_queue=32), classifier=clf, load_on_startup=False)
    images = [*sample_images, png, webp] * 2
    images = images[:32]
    assert len(images) == 32

    async def run() -> tuple[list[dict], list[dict]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:

            async def one(data: bytes) -> dict:
                response = await http.post(
                    "/predict", content=data, headers={"content-type": "application/octet-stream"}
                )
                assert response.status_code == 200, response.text
                body = response.json()
                return {k: body[k] for k in ("predicted_class", "confidence", "all_confidences")}

            serial = [await one(data) for data in images]
            parallel = await asyncio.gather(*(one(data) for data in images))
            return serial, list(parallel)

    serial, parallel = asyncio.run(run())
    assert parallel == serial
    assert len({s["confidence"] for s in serial}) > 1  # the images really differ
