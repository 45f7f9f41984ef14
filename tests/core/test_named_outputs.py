"""Two named outputs (`logits`, `embedding`) read by name; one-output artifacts unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELS, SAMPLES, tiny_fields
from wastesort import Classifier
from wastesort.errors import ModelError
from wastesort.interpreter import output_details
from wastesort.manifest import OutputSpec
from wastesort.registry import Registry
from wastesort.runtime import make_interpreter

ALL_SAMPLES = sorted(SAMPLES.rglob("*.jpg"))


@pytest.fixture(scope="session")
def tiny_named(tiny_models: Path) -> Path:
    return tiny_models / "named" / "tiny_int8.tflite"


def test_outputs_are_found_by_name_not_position(tiny_named: Path):
    interpreter, _ = make_interpreter(tiny_named.read_bytes(), num_threads=1)
    by_position = interpreter.get_output_details()
    named = output_details(interpreter)
    assert set(named) == {"logits", "embedding"}
    assert by_position[0]["index"] == named["embedding"]["index"]  # why names are needed
    assert int(named["logits"]["shape"][-1]) == len(LABELS)


def test_one_output_model_has_that_output_as_logits(tiny_int8: Path):
    interpreter, _ = make_interpreter(tiny_int8.read_bytes(), num_threads=1)
    assert set(output_details(interpreter)) == {"logits"}


def test_two_output_model_predicts_what_its_one_output_twin_predicts(
    tiny_int8: Path, tiny_named: Path
):
    one = Classifier.load(tiny_int8, labels=LABELS)
    two = Classifier.load(tiny_named, labels=LABELS)
    images = [p.read_bytes() for p in ALL_SAMPLES]
    ones, twos = one.predict_batch(images), two.predict_batch(images)
    assert [p.predicted_class for p in ones] == [p.predicted_class for p in twos]
    for a, b in zip(ones, twos, strict=True):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-6)
        assert b.embedding is None and b.image_stats is None  # no reference: no extras
    assert set(two.outputs_from_arrays(two.preprocess(images[0]), ("logits", "embedding"))) == {
        "logits",
        "embedding",
    }
    with pytest.raises(ModelError, match="no output named 'embedding'"):
        one.outputs_from_arrays(one.preprocess(images[0]), ("logits", "embedding"))


def test_bare_two_output_file_gets_named_outputs_in_its_entry(tiny_named: Path):
    entry = Classifier.load(tiny_named, labels=LABELS).entry
    assert entry.outputs is not None
    assert set(entry.outputs) == {"logits", "embedding"}
    assert entry.outputs["embedding"].kind == "embedding"
    assert entry.output == entry.outputs["logits"] and entry.output.dtype == "int8"


def test_registry_entry_listing_an_output_the_model_lacks_is_refused(
    tmp_path: Path, tiny_int8: Path
):
    registry = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "cache")
    fields = tiny_fields()
    registry.publish(
        tiny_int8,
        version="v1",
        outputs={"logits": fields["output"], "embedding": OutputSpec(kind="embedding")},
        **fields,
    )
    with pytest.raises(ModelError, match="no output named embedding"):
        Classifier.load(tmp_path / "reg@v1", cache_dir=tmp_path / "cache")


def test_batch_of_two_output_model_matches_single_invokes(tiny_named: Path):
    clf = Classifier.load(tiny_named, labels=LABELS)
    arrays = np.stack([clf.preprocess(p.read_bytes()) for p in ALL_SAMPLES[:3]])
    batch = clf.outputs_from_arrays(arrays, ("logits", "embedding"))
    for i in range(3):
        single = clf.outputs_from_arrays(arrays[i], ("embedding",))
        np.testing.assert_allclose(single["embedding"][0], batch["embedding"][i], atol=1e-6)
