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
    scale = rounding.fold_scale(conv).numpy()
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        scale = scale[:, None]
    return (kernel * scale).transpose(3, 0, 1, 2)


def _kernels_in(path: Path) -> list[np.ndarray]:
    """Every 4-D weight tensor of a TFLite file, dequantized when it is int8."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    # Activations hold whatever the arena held (a stray signalling NaN warns on the
    # cast), so read only tensors that no op writes: the model's constants.
    written = {t for op in interpreter._get_ops_details() for t in op["outputs"]}
    written |= {d["index"] for d in interpreter.get_input_details()}
    kernels = []
    for detail in interpreter.get_tensor_details():
        q = detail["quantization_parameters"]
        if detail["index"] in written or len(detail["shape"]) != 4:
            continue
        if detail["dtype"] not in (np.int8, np.float32):
            continue
        values = interpreter.get_tensor(detail["index"]).astype(np.float64)
        if detail["dtype"] == np.int8:
            if len(q["scales"]) < 2:
                continue
            values = values * q["scales"].reshape(
                [-1 if i == q["quantized_dimension"] else 1 for i in range(4)]
            )
        kernels.append(values)
    return kernels


def _holds(in_file: list[np.ndarray], conv: keras.layers.Layer, kernel: np.ndarray) -> bool:
    want = _folded(conv, kernel)
    gaps = [np.abs(k - want).max() for k in in_file if k.shape == want.shape]
    return bool(gaps) and min(gaps) < 1e-5 * np.abs(want).max()


def _nested() -> tuple[keras.Model, keras.Model]:
    """(outer, inner): outer rescales the pixels and runs inner, which holds the kinds of conv
    the backbones use (as MobileNetV2 sits behind a Rescaling layer)."""
    layers = keras.layers
    keras.utils.set_random_seed(1)
    x = inputs = keras.Input((40, 32, 4))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.DepthwiseConv2D(5, strides=2, padding="same", use_bias=False)(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False)(x)
    x = layers.Conv2D(6, 1, strides=2, use_bias=False)(x)
    x = layers.Conv2D(5, (3, 2), padding="valid", use_bias=False)(x)
    inner = keras.Model(inputs, x, name="inner")
    # another model calls inner first, as training's feature extractor calls the backbone
    keras.Sequential([inner, layers.GlobalAveragePooling2D()]).build((None, 40, 32, 4))
    pixels = keras.Input((40, 32, 4))
    outer = keras.Model(pixels, inner(layers.Rescaling(1 / 127.5, -1)(pixels)))
    return outer, inner


def test_the_hessians_give_each_conv_its_exact_output_error():
    outer, inner = _nested()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (5, 40, 32, 4)).astype(np.float32)

    hessians = rounding.hessians(outer, images)
    layers = keras.layers
    same = keras.Sequential([keras.Input((40, 32, 4)), layers.Rescaling(1 / 127.5, -1), inner])
    from_sequential = rounding.hessians(same, images)
    assert set(from_sequential) == set(hessians)
    for conv, h in from_sequential.items():
        np.testing.assert_allclose(h, hessians[conv], rtol=1e-6)

    convs = [x for x in inner.layers if rounding._roundable(x)]
    assert set(hessians) == set(convs) and len(convs) == 5
    for conv in convs:
        # a kernel change delta moves the conv's output by the conv of delta: its energy is
        # the sum over output channels of delta_c H delta_c
        delta = rng.normal(size=conv.kernel.shape).astype(np.float32)
        with rounding.kernels_replaced({conv: delta}):
            moved = keras.Model(inner.input, conv.output).predict(images / 127.5 - 1, verbose=0)
        rows = delta.reshape(-1, moved.shape[-1]).T.astype(np.float64)
        h = np.broadcast_to(hessians[conv], (len(rows), *hessians[conv].shape[1:]))
        energy = np.einsum("ri,rij,rj->", rows, h, rows)
        assert energy == pytest.approx(np.sum(moved.astype(np.float64) ** 2), rel=1e-4), conv.name


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
    cfg = QuantizeConfig(modes=("float32", "int8"), kernel_rounding="gptq")
    variants = quantize.convert(model, tmp_path / "tflite", cfg, pixels, seed=0)

    (kernels,) = made
    assert set(kernels) == set(convs) and len(convs) == 1 + 16 + 15 + 16 + 1
    assert all(np.array_equal(conv.kernel.numpy(), originals[conv]) for conv in convs)
    int8 = _kernels_in(variants["int8"].path)
    float32 = _kernels_in(variants["float32"].path)
    for conv, kernel in kernels.items():
        assert _holds(int8, conv, kernel), f"{conv.name}: the converter rounded again"
        assert _holds(float32, conv, originals[conv]), f"{conv.name}: float32 got GPTQ kernels"

    def logits() -> np.ndarray:
        return model.predict(pixels.astype(np.float32), verbose=0)

    def nearest(conv: keras.layers.Layer) -> np.ndarray:
        scale = rounding.fold_scale(conv).numpy()
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
