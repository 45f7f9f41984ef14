"""The reviewer's endpoints (issue 36 §1-2): the queue's order and filters, photos, labels as
label events, who may call them (admin key or token: yes; a caller's key: 403; nothing: 401),
and their place in the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from mangum import Mangum
from starlette.testclient import TestClient

from functions.api.app import create_app
from functions.api.problems import MEDIA_TYPE, PROBLEM_BASE
from tests.api.conftest import gateway_event, make_settings
from tests.api.review_seed import ADMIN_TOKEN, seed
from tests.api.test_api_lambda import FakeContext
from wastesort import Classifier
from wastesort.capture import CaptureStore

Client = Callable[..., TestClient]
ADMIN = {"x-admin-token": ADMIN_TOKEN}


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def queue(store_root: Path, classifier: Classifier) -> dict[str, list[str]]:
    return seed(store_root, list(classifier.labels))


@pytest.fixture
def admin(make_client: Client, store_root: Path, queue: dict) -> TestClient:
    return make_client(capture_uri=str(store_root), admin_token=ADMIN_TOKEN)


def problem(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.json()["type"] == PROBLEM_BASE + kind


def test_the_queue_is_uncertain_then_disagreements_then_the_sample(
    admin: TestClient, queue: dict, classifier: Classifier
):
    page = admin.get("/captures", headers=ADMIN).json()
    ids = [item["id"] for item in page["items"]]
    assert ids == queue["uncertain"] + queue["disagreement"] + queue["sample"]
    assert [i["queue"] for i in page["items"][:3]] == ["uncertain"] * 3
    assert page["labels"] == [*classifier.labels, "not_waste"]
    assert page["sources"] == ["api", "bin-0042"] and page["model_versions"] == ["tiny-0", "tiny-1"]
    assert page["total"] == 8 and page["next_offset"] is None
    assert page["items"][3]["feedback_label"] and not page["items"][3]["reviewed"]


def test_filters_and_pages(admin: TestClient):
    only_bins = admin.get("/captures", params={"source": "bin-0042"}, headers=ADMIN).json()
    assert {i["source"] for i in only_bins["items"]} == {"bin-0042"} and only_bins["total"] == 4
    old = admin.get("/captures", params={"model_version": "tiny-0"}, headers=ADMIN).json()
    assert {i["model_version"] for i in old["items"]} == {"tiny-0"}
    first = admin.get("/captures", params={"limit": 3}, headers=ADMIN).json()
    assert len(first["items"]) == 3 and first["next_offset"] == 3
    rest = admin.get("/captures", params={"offset": 3, "limit": 10}, headers=ADMIN).json()
    assert len(rest["items"]) == 5 and rest["next_offset"] is None


def test_a_label_is_a_review_label_event_and_leaves_the_queue(
    admin: TestClient, queue: dict, store_root: Path
):
    capture_id = queue["uncertain"][0]
    response = admin.put(f"/captures/{capture_id}/label", json={"label": "glass"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "review"
    events = CaptureStore.from_uri(str(store_root)).labels(capture_id)
    assert [(e.label, e.source, e.by) for e in events] == [("glass", "review", "reviewer")]
    ids = [i["id"] for i in admin.get("/captures", headers=ADMIN).json()["items"]]
    assert capture_id not in ids
    everything = admin.get("/captures", params={"reviewed": "true"}, headers=ADMIN).json()
    labelled = next(i for i in everything["items"] if i["id"] == capture_id)
    assert labelled["reviewed"] and labelled["label"] == "glass"


def test_the_photo(admin: TestClient, queue: dict):
    response = admin.get(f"/captures/{queue['sample'][0]}/image", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:3] == b"\xff\xd8\xff"


def test_review_problems(admin: TestClient, queue: dict):
    capture_id = queue["sample"][0]
    put = admin.put
    problem(
        put(f"/captures/{capture_id}/label", json={"label": "bottle"}, headers=ADMIN),
        422,
        "unknown-label",
    )
    problem(put(f"/captures/{capture_id}/label", json={}, headers=ADMIN), 422, "validation-error")
    unknown = "20261205T103000Z-0123456789ab-api"
    problem(
        put(f"/captures/{unknown}/label", json={"label": "glass"}, headers=ADMIN),
        404,
        "unknown-capture",
    )
    problem(admin.get(f"/captures/{unknown}/image", headers=ADMIN), 404, "unknown-capture")
    problem(admin.get("/captures/nope/image", headers=ADMIN), 422, "validation-error")
    # the shape of an id with no real time in it (found by the contract test): 404, not 500
    no_such_day = "00000000T000000Z-000000000000-api"
    problem(admin.get(f"/captures/{no_such_day}/image", headers=ADMIN), 404, "unknown-capture")


@pytest.mark.parametrize(
    ("headers", "status", "kind"),
    [
        ({}, 401, "unauthorized"),
        ({"x-api-key": "a-callers-key"}, 403, "forbidden"),
        ({"x-admin-token": "wrong"}, 403, "forbidden"),
        ({"authorization": "Basic eDp5"}, 401, "unauthorized"),
    ],
)
def test_only_an_admin_may_review(admin: TestClient, queue: dict, headers, status, kind):
    capture_id = queue["sample"][0]
    problem(admin.get("/captures", headers=headers), status, kind)
    problem(admin.get(f"/captures/{capture_id}/image", headers=headers), status, kind)
    response = admin.put(f"/captures/{capture_id}/label", json={"label": "glass"}, headers=headers)
    problem(response, status, kind)


def test_the_token_in_every_header_it_may_come_in(admin: TestClient):
    for headers in (
        {"x-admin-token": ADMIN_TOKEN},
        {"authorization": f"Bearer {ADMIN_TOKEN}"},
        {"x-api-key": ADMIN_TOKEN},
    ):
        assert admin.get("/captures", headers=headers).status_code == 200, headers


def test_no_token_configured_means_no_admin(make_client: Client, store_root: Path, queue: dict):
    client = make_client(capture_uri=str(store_root))
    problem(client.get("/captures", headers={"x-admin-token": ""}), 401, "unauthorized")
    problem(client.get("/captures", headers=ADMIN), 403, "forbidden")


def test_behind_api_gateway_the_key_id_decides(
    classifier: Classifier, store_root: Path, queue: dict
):
    """The recorded REST event's key id is a caller's until it is configured as an admin's."""
    event = gateway_event("v1", "GET", "/captures")
    key_id = event["requestContext"]["identity"]["apiKeyId"]
    assert key_id

    def call(**settings) -> dict:
        app = create_app(
            make_settings(capture_uri=str(store_root), **settings),
            classifier=classifier,
            load_on_startup=False,
        )
        return Mangum(app, lifespan="off")(event, FakeContext())

    try:
        assert call(admin_key_ids=["someone-else"])["statusCode"] == 403
        assert call(admin_key_ids=f"other,{key_id}")["statusCode"] == 200
        # an admin token is no way round a caller's key id behind the gateway
        event["headers"]["x-admin-token"] = "not-it"
        assert call(admin_token=ADMIN_TOKEN)["statusCode"] == 403
    finally:  # Mangum set up an event loop for this thread, as on Lambda: close it
        loop = asyncio.get_event_loop_policy().get_event_loop()
        asyncio.set_event_loop(None)
        loop.close()


def test_capture_off_hides_the_routes(make_client: Client):
    client = make_client(admin_token=ADMIN_TOKEN)
    problem(client.get("/captures", headers=ADMIN), 409, "capture-off")
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/captures") for p in paths)


def test_the_routes_are_documented_with_examples_and_access_problems(admin: TestClient):
    paths = admin.get("/openapi.json").json()["paths"]
    listing = paths["/captures"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["example"]["items"]
    for operation in (listing, paths["/captures/{capture_id}/label"]["put"]):
        assert {"401", "403", "409", "503"} <= set(operation["responses"])
    label = paths["/captures/{capture_id}/label"]["put"]
    assert label["requestBody"]["content"]["application/json"]["example"] == {"label": "glass"}
    assert (
        "image/jpeg" in paths["/captures/{capture_id}/image"]["get"]["responses"]["200"]["content"]
    )
