"""The reference file: numpy-only statistics that round-trip, verified by sha256, and the
`Prediction` extras (`embedding`, `image_stats`) of a version that has one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import LABELS, SAMPLES, encode, tiny_fields
from wastesort import Classifier, reference
from wastesort.errors import IntegrityError, ModelError
from wastesort.manifest import OutputSpec
from wastesort.registry import Registry

ALL_SAMPLES = sorted(SAMPLES.rglob("*.jpg"))


def _random_reference(n: int = 300, width: int = 40) -> reference.Reference:
    rng = np.random.default_rng(1)
    return reference.build(
        rng.normal(size=(n, width)) * np.linspace(3, 0.1, width),
        rng.dirichlet(np.ones(len(LABELS)), n),
        rng.integers(0, len(LABELS), n),
        rng.random((n, len(reference.STATS))),
        LABELS,
        max_items=100,
        meta={"version": "v1"},
    )


def test_round_trip_keeps_every_array_and_fact():
    ref = _random_reference()
    back = reference.Reference.loads(ref.dumps())
    assert back.labels == LABELS and back.meta == {"count": 300, "version": "v1"}
    assert back.dims == reference.DIMS and back.embeddings.shape == (100, reference.DIMS)
    assert back.image_stats.shape == (100, len(reference.STATS))
    for name in ("mean", "components", "embeddings", "predicted_mix", "confidence_hist"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ref, name))
    assert back.predicted_mix.sum() == pytest.approx(1) and back.true_mix.sum() == pytest.approx(1)
    assert back.confidence_hist.sum() == pytest.approx(1)
    assert np.all(np.diff(back.explained_variance) <= 1e-6)  # largest axis first


def test_projection_is_orthonormal_and_deterministic():
    ref = _random_reference()
    np.testing.assert_allclose(ref.components @ ref.components.T, np.eye(ref.dims), atol=1e-5)
    again = _random_reference()
    np.testing.assert_array_equal(ref.components, again.components)
    assert ref.project(ref.mean[None]).tolist() == [[0.0] * ref.dims]


def test_small_embeddings_keep_fewer_dimensions():
    rng = np.random.default_rng(0)
    ref = reference.build(
        rng.normal(size=(10, 8)), rng.dirichlet(np.ones(6), 10), np.zeros(10, int),
        rng.random((10, 4)), LABELS,
    )  # fmt: skip
    assert ref.dims == 8


def test_not_a_reference_file_is_a_model_error():
    with pytest.raises(ModelError, match="not a reference file"):
        reference.Reference.loads(b"not a zip")


def test_image_stats_see_blur_brightness_and_colour():
    photo = Image.open(ALL_SAMPLES[0]).convert("RGB").resize((128, 96))
    arrays = np.stack([np.asarray(photo), np.asarray(photo.filter(ImageFilter.GaussianBlur(3)))])
    sharp, blurred = reference.image_stats_batch(arrays)
    assert blurred[3] < sharp[3] / 2  # Laplacian variance falls with blur
    grey = reference.image_stats(np.full((32, 32, 3), 128, np.uint8))
    assert grey["brightness"] == pytest.approx(128 / 255, abs=1e-3)
    assert grey["contrast"] == grey["colourfulness"] == grey["blur"] == 0
    red = reference.image_stats(np.tile(np.array([255, 0, 0], np.uint8), (8, 8, 1)))
    assert red["colourfulness"] > 0.3


@pytest.fixture
def referenced_registry(tmp_path: Path, tiny_models: Path) -> Path:
    """`tiny-2`: the two-output tiny model with a reference built from its own embeddings."""
    model = tiny_models / "named" / "tiny_int8.tflite"
    clf = Classifier.load(model, labels=LABELS)
    arrays = np.stack([clf.preprocess(p.read_bytes()) for p in ALL_SAMPLES])
    outputs = clf.outputs_from_arrays(arrays, ("logits", "embedding"))
    ref = reference.build(
        outputs["embedding"],
        clf.scores_from_arrays(arrays),
        np.array([LABELS.index(p.parent.name) for p in ALL_SAMPLES]),
        reference.image_stats_batch(arrays),
        LABELS,
    )
    (tmp_path / "reference.npz").write_bytes(ref.dumps())
    root = tmp_path / "reg"
    Registry.from_uri(root).publish(
        model,
        version="tiny-2",
        aliases=["production"],
        reference=tmp_path / "reference.npz",
        outputs={"logits": tiny_fields()["output"], "embedding": OutputSpec(kind="embedding")},
        **tiny_fields(),
    )
    return root


def test_prediction_carries_embedding_and_image_stats_with_a_reference(
    referenced_registry: Path, tmp_path: Path
):
    clf = Classifier.load(referenced_registry, cache_dir=tmp_path / "c")
    assert clf.reference is not None
    data = ALL_SAMPLES[0].read_bytes()
    p = clf.predict(data)
    assert p.embedding is not None and len(p.embedding) == clf.reference.dims
    assert set(p.image_stats or {}) == set(reference.STATS)
    assert set(p.to_dict()) == {  # the contract fields unless details are asked for
        "predicted_class",
        "confidence",
        "all_confidences",
        "decision",
        "model_version",
    }
    assert {"embedding", "image_stats"} <= set(p.to_dict(details=True))
    # the reference's own projection of this image is where the prediction puts it
    np.testing.assert_allclose(p.embedding, clf.reference.embeddings[0], atol=1e-3)
    batch = clf.predict_batch([data, ALL_SAMPLES[1].read_bytes()])
    assert batch[0].embedding == p.embedding
    plain = Classifier.load(referenced_registry, cache_dir=tmp_path / "c", reference=None)
    assert plain.predict(data).embedding is None
    assert json.loads((referenced_registry / "manifest.json").read_text())["schema_version"] == 2


def test_a_tampered_reference_is_refused(referenced_registry: Path, tmp_path: Path):
    path = referenced_registry / "artifacts" / "tiny-2" / "reference.npz"
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"reference\.npz: sha256"):
        Classifier.load(referenced_registry, cache_dir=tmp_path / "c")


def test_image_without_reference_has_no_extras(tiny_int8: Path):
    p = Classifier.load(tiny_int8, labels=LABELS).predict(encode(Image.new("RGB", (64, 48))))
    assert p.embedding is None and p.image_stats is None
