"""The exported model: the training model's layers with a second, named output (`embedding`),
converted with both outputs found by name and served through `wastesort.Classifier`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

import keras

from training.model import assemble, build_head, with_embedding

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SHAPE = (48, 64, 3)
LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def _backbone() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(12, 3, strides=2)(x), name="backbone")


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    from wastesort.manifest import InputSpec
    from wastesort.preprocess import preprocess

    spec = InputSpec(height=SHAPE[0], width=SHAPE[1])
    return np.stack([preprocess(p.read_bytes(), spec) for p in sorted(SAMPLES.rglob("*.jpg"))])


@pytest.mark.parametrize("tta_flip", [False, True])
def test_the_export_adds_the_embedding_and_keeps_the_logits(pixels: np.ndarray, tta_flip: bool):
    backbone = _backbone()
    model = assemble(backbone, build_head(12, len(LABELS), 0.2), tta_flip=tta_flip)
    exported = with_embedding(model)
    x = pixels[:4].astype(np.float32)
    out = exported.predict(x, verbose=0)
    assert set(out) == {"logits", "embedding"}
    np.testing.assert_allclose(out["logits"], model.predict(x, verbose=0), atol=1e-5)
    pooled = backbone.predict(x, verbose=0).mean(axis=(1, 2))
    if tta_flip:  # the mean of both views' pooled features
        mirrored = backbone.predict(x[:, :, ::-1], verbose=0).mean(axis=(1, 2))
        pooled = (pooled + mirrored) / 2
    np.testing.assert_allclose(out["embedding"], pooled, atol=1e-5)


def test_converted_int8_has_both_outputs_by_name_and_serves(tmp_path: Path, pixels: np.ndarray):
    from training.config import QuantizeConfig
    from training.evaluate import classifier, entry_for
    from training.quantize import convert
    from wastesort.manifest import InputSpec

    model = assemble(_backbone(), build_head(12, len(LABELS), 0.2), tta_flip=True)
    cfg = QuantizeConfig(modes=("int8", "float32"), representative_images=len(pixels))
    variants = convert(model, tmp_path / "tflite", cfg, pixels)
    for variant in variants.values():
        assert set(variant.outputs) == {"logits", "embedding"}
        assert variant.output == variant.outputs["logits"]
        assert variant.outputs["embedding"]["shape"][-1] == 12
    int8 = variants["int8"]
    assert int8.outputs["embedding"]["dtype"] == int8.outputs["logits"]["dtype"]  # int8_output
    entry = entry_for(
        int8.path,
        version="eval-int8",
        labels=LABELS,
        input_spec=InputSpec(height=SHAPE[0], width=SHAPE[1]),
        output=int8.output,
        outputs=int8.outputs,
    )
    assert set(entry.outputs or {}) == {"logits", "embedding"}
    clf = classifier(entry, int8.path)
    served = clf.outputs_from_arrays(pixels[:4], ("logits", "embedding"))
    keras_out = with_embedding(model).predict(pixels[:4].astype(np.float32), verbose=0)
    assert (served["logits"].argmax(1) == keras_out["logits"].argmax(1)).mean() >= 0.75
    np.testing.assert_allclose(served["embedding"], keras_out["embedding"], atol=0.1)
