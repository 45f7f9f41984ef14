"""Training feeds the network exactly the tensors serving feeds it, for the same JPEG."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELS, SAMPLES, tiny_fields
from training.config import DataConfig, InputConfig
from training.data import input_spec, scan
from wastesort import Classifier
from wastesort.manifest import ArtifactRef, ModelEntry
from wastesort.preprocess import preprocess


@pytest.fixture
def sample_folder(tmp_path: Path) -> Path:
    for label in LABELS:
        shutil.copytree(SAMPLES / label, tmp_path / "data" / label)
    return tmp_path / "data"


@pytest.mark.parametrize("resize", ["squash", "center_crop", "letterbox"])
def test_training_pixels_equal_serving_pixels(sample_folder: Path, resize: str):
    spec = input_spec(InputConfig(height=48, width=64, resize=resize))
    _, items, pixels, _ = scan(DataConfig(dir=sample_folder), spec)
    for item, train_pixels in zip(items, pixels, strict=True):
        served = preprocess((sample_folder / item.path).read_bytes(), spec)
        assert served.dtype == train_pixels.dtype == np.uint8
        np.testing.assert_array_equal(served, train_pixels)


def test_tf_data_pipeline_and_classifier_see_the_same_tensor(sample_folder: Path, tiny_int8: Path):
    """The float batches training's tf.data pipeline yields (no augmentation: validation and
    view 0) equal the uint8 array `Classifier.preprocess` hands the interpreter."""
    from training.features import pipeline

    spec = input_spec(InputConfig(height=48, width=64))
    _, items, pixels, _ = scan(DataConfig(dir=sample_folder), spec)
    batches = np.concatenate([b.numpy() for b in pipeline(pixels, batch_size=7)])
    content = tiny_int8.read_bytes()
    entry = ModelEntry(
        version="t",
        artifact=ArtifactRef(path="m.tflite", sha256="0" * 64, size=len(content)),
        **tiny_fields(input=spec),
    )
    clf = Classifier(content, entry)
    for item, batch_row in zip(items, batches, strict=True):
        served = clf.preprocess((sample_folder / item.path).read_bytes())
        assert batch_row.dtype == np.float32
        np.testing.assert_array_equal(batch_row, served.astype(np.float32))
