"""GPTQ kernel rounding: on the converter's own grid, closer to the float layer than nearest
rounding, written into the int8 file as it is, and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

import keras

from training import quantize, rounding
from training.config import QuantizeConfig

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SHAPE = (64, 48, 3)


def test_gptq_rounds_onto_the_grid_and_keeps_the_layer_output_closer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 96)) @ rng.normal(size=(96, 96))  # correlated inputs
    w = rng.normal(size=(8, 96))
    step = np.abs(w).max(axis=1) / 127

    q = rounding.gptq(w, (x.T @ x)[None], step)

    grid = q / step[:, None]
    assert np.allclose(grid, np.round(grid), atol=1e-9)
    assert np.array_equal(np.abs(grid).max(axis=1).round(), np.full(8, 127.0))  # same step
    nearest = np.round(w / step[:, None]) * step[:, None]

    def error(k: np.ndarray) -> float:
        return float(np.linalg.norm(x @ (k - w).T))

    assert error(q) < 0.8 * error(nearest)


def _folded(conv: keras.layers.Layer, kernel: np.ndarray) -> np.ndarray:
    """The kernel as the int8 file stores it: folded, output channels first."""
    scale = rounding.fold_scale(conv)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        scale = scale[:, None]
    return (kernel * scale).transpose(3, 0, 1, 2)


def _int8_kernels(path: Path) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    kernels = []
    for detail in interpreter.get_tensor_details():
        q = detail["quantization_parameters"]
        if detail["dtype"] == np.int8 and len(detail["shape"]) == 4 and len(q["scales"]) > 1:
            shape = [-1 if i == q["quantized_dimension"] else 1 for i in range(4)]
            values = interpreter.get_tensor(detail["index"]).astype(np.float64)
            kernels.append(values * q["scales"].reshape(shape))
    return kernels


@pytest.mark.slow
def test_the_int8_file_holds_the_gptq_kernels_and_the_model_keeps_its_own(tmp_path, monkeypatch):
    from training.backbones import build_backbone
    from training.model import assemble, build_head
    from wastesort.manifest import InputSpec
    from wastesort.preprocess import preprocess

    keras.utils.set_random_seed(0)
    backbone = build_backbone("efficientnet_lite0", SHAPE, weights="pretrained", cache_dir=tmp_path)
    model = assemble(backbone, build_head(1280, 6, 0.2), tta_flip=False)
    spec = InputSpec(height=SHAPE[0], width=SHAPE[1])
    pixels = np.stack([preprocess(p.read_bytes(), spec) for p in sorted(SAMPLES.rglob("*.jpg"))])
    convs = [x for x in backbone.layers if rounding._roundable(x)]
    originals = {conv: conv.kernel.numpy() for conv in convs}

    made: list[dict] = []  # the kernels that convert rounds, as it made them
    gptq_kernels = rounding.gptq_kernels

    def recorded(*args, **kwargs) -> dict:
        made.append(gptq_kernels(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(rounding, "gptq_kernels", recorded)
    cfg = QuantizeConfig(modes=("int8",), kernel_rounding="gptq")
    variants = quantize.convert(model, tmp_path / "tflite", cfg, pixels, seed=0)

    (kernels,) = made
    assert set(kernels) == set(convs) and len(convs) == 1 + 16 + 15 + 16 + 1
    assert all(np.array_equal(conv.kernel.numpy(), originals[conv]) for conv in convs)
    in_file = _int8_kernels(variants["int8"].path)
    for conv, kernel in kernels.items():
        want = _folded(conv, kernel)
        gaps = [np.abs(k - want).max() for k in in_file if k.shape == want.shape]
        assert min(gaps) < 1e-5 * np.abs(want).max(), f"{conv.name}: the converter rounded again"

    def logits() -> np.ndarray:
        return model.predict(pixels.astype(np.float32), verbose=0)

    def nearest(conv: keras.layers.Layer) -> np.ndarray:
        scale = rounding.fold_scale(conv)
        flat = originals[conv].reshape(-1, len(scale)) * scale
        step = np.maximum(np.abs(flat).max(axis=0), 1e-12) / 127
        return (np.round(flat / step) * step / scale).reshape(originals[conv].shape)

    float_logits = logits()
    with rounding.kernels_replaced(kernels):
        gptq_error = np.sqrt(np.mean((logits() - float_logits) ** 2))
    with rounding.kernels_replaced({conv: nearest(conv) for conv in convs}):
        nearest_error = np.sqrt(np.mean((logits() - float_logits) ** 2))
    assert gptq_error < 0.6 * nearest_error
    assert all(np.array_equal(conv.kernel.numpy(), originals[conv]) for conv in convs)
