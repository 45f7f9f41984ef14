"""`/predict?details=true`: the embedding and image statistics of a version with a reference
file, shown only when asked (the contract fields stay as they were otherwise)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import sample_bytes
from tests.core.test_reference import referenced_registry  # noqa: F401 (a fixture)
from wastesort import Classifier, reference

CONTRACT = {"predicted_class", "confidence", "all_confidences", "decision", "model_version"}


def _post(client, query: str = ""):
    return client.post(
        f"/predict{query}",
        content=sample_bytes("glass"),
        headers={"content-type": "image/jpeg"},
    )


def test_details_are_shown_only_when_asked(
    make_client,
    referenced_registry: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    clf = Classifier.load(referenced_registry, cache_dir=tmp_path / "c")
    client = make_client(clf)
    plain = _post(client).json()
    assert set(plain) >= CONTRACT
    assert "embedding" not in plain and "image_stats" not in plain
    detailed = _post(client, "?details=true").json()
    assert len(detailed["embedding"]) == clf.reference.dims
    assert set(detailed["image_stats"]) == set(reference.STATS)
    assert {k: detailed[k] for k in CONTRACT} == {k: plain[k] for k in CONTRACT}
    assert "embedding" not in _post(client, "?details=false").json()


def test_a_version_without_reference_answers_without_details(make_client) -> None:
    answer = _post(make_client(), "?details=true").json()
    assert set(answer) >= CONTRACT
    assert "embedding" not in answer and "image_stats" not in answer


def test_a_details_value_that_is_not_a_boolean_is_a_problem(make_client) -> None:
    response = _post(make_client(), "?details=maybe")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "details must be true or false" in response.json()["detail"]
