"""The one golden-set rule (wastesort.golden), as the hook and the edge self-test apply it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELS, sample_bytes, tiny_fields
from wastesort import Classifier, golden
from wastesort.errors import EmptyImageError
from wastesort.manifest import ArtifactRef, GoldenItem, ModelEntry
from wastesort.registry import GoldenSample, Registry


def _item(expected: str, scores: dict[str, float] | None = None, name: str = "a.jpg") -> GoldenItem:
    data = name.encode()
    ref = ArtifactRef(path=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return GoldenItem(image=ref, expected_class=expected, scores=scores or {})


def _entry(threshold: float = 0.5) -> ModelEntry:
    ref = ArtifactRef(path="m.tflite", sha256="ab" * 32, size=1)
    return ModelEntry(version="v1", artifact=ref, **tiny_fields(uncertain_threshold=threshold))


def _answer(cls: str, **scores: float) -> dict:
    return {
        "predicted_class": cls,
        "confidence": max(scores.values(), default=1.0),
        "all_confidences": scores,
    }


def test_the_published_class_and_close_scores_pass() -> None:
    item = _item("glass", {"glass": 0.9, "metal": 0.1})
    answer = golden.Answer.of(_answer("glass", glass=0.85, metal=0.15))
    assert golden.check_item(item, answer, threshold=0.5) == []


def test_another_class_fails_with_what_was_said() -> None:
    item = _item("glass", {"glass": 0.9})
    failures = golden.check_item(
        item, golden.Answer.of(_answer("metal", metal=0.9, glass=0.1)), threshold=0.5
    )
    assert failures[0] == "a.jpg: expected 'glass', got 'metal' (confidence 0.9)"
    assert "a.jpg: glass scores 0.1000, published 0.9000" in failures


def test_a_class_published_below_the_threshold_may_tip_but_its_scores_are_checked() -> None:
    item = _item("glass", {"glass": 0.45, "metal": 0.40})
    tipped = golden.Answer.of(_answer("metal", glass=0.42, metal=0.43))
    assert golden.check_item(item, tipped, threshold=0.5) == []
    far = golden.Answer.of(_answer("metal", glass=0.2, metal=0.7))
    assert len(golden.check_item(item, far, threshold=0.5)) == 2  # both scores off by > 0.1


def test_scores_just_inside_and_outside_the_tolerance() -> None:
    item = _item("glass", {"glass": 0.8})
    inside = golden.Answer.of(_answer("glass", glass=0.8 - 0.099))
    outside = golden.Answer.of(_answer("glass", glass=0.8 - 0.101))
    assert golden.check_item(item, inside, threshold=0.5) == []
    assert golden.check_item(item, outside, threshold=0.5) != []
    assert golden.check_item(item, outside, threshold=0.5, tolerance=0.2) == []


def test_a_predictor_that_cannot_answer_is_a_failure_not_a_crash() -> None:
    items = [(_item("glass", name="a.jpg"), b"a"), (_item("glass", name="b.jpg"), b"b")]

    def predict(data: bytes) -> dict:
        if data == b"a":
            raise golden.PredictError("/predict answered 503")
        raise EmptyImageError("the image is empty")

    failures = golden.check(predict, _entry(), items)
    assert failures == [
        "a.jpg: no prediction (/predict answered 503)",
        "b.jpg: no prediction (the image is empty)",
    ]


def test_a_classifier_passes_the_golden_set_it_was_published_with(
    tmp_path: Path, tiny_int8: Path
) -> None:
    """Scores published from the model itself replay within tolerance through `check`."""
    probe = Classifier.load(tiny_int8, labels=LABELS)
    data = sample_bytes("metal")
    published = probe.predict(data)
    registry = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "c")
    registry.publish(
        tiny_int8,
        version="v1",
        golden=[GoldenSample("m.jpg", data, published.predicted_class, published.all_confidences)],
        aliases=["production"],
        **tiny_fields(),
    )
    clf = Classifier.load(tmp_path / "reg", cache_dir=tmp_path / "c")
    images = [(i, registry.fetch_content(i.image)[1]) for i in clf.entry.golden_set]
    assert golden.check(clf.predict, clf.entry, images) == []
    wrong = clf.entry.golden_set[0].model_copy(update={"expected_class": "nonesuch"})
    failures = golden.check(clf.predict, clf.entry, [(wrong, data)])
    assert len(failures) == 1
    assert "expected 'nonesuch'" in failures[0]


@pytest.mark.parametrize("confidence", [0.5, 0.51])
def test_the_threshold_itself_is_confident(confidence: float) -> None:
    from wastesort.scoring import is_confident

    assert is_confident(confidence, 0.5)
    assert not is_confident(confidence - 0.0001, confidence)
    swept = is_confident(np.array([0.4999, 0.5, 0.51]), 0.5)
    assert swept.tolist() == [False, True, True]
