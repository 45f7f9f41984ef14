"""The int8 simulation used for quantization-aware fine-tuning rounds where the int8 model
does, trains the network's own weights, and predicts the real int8 model's output."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

import keras

from training.fake_quant import FakeQuant, QuantizedKernel, simulate_int8
from training.model import assemble, build_head, freeze_batchnorm

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SHAPE = (64, 48, 3)


def _flat(model: keras.Model) -> list[keras.layers.Layer]:
    out = []
    for layer in model.layers:
        out += _flat(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def _network(weights: str, cache: Path) -> keras.Model:
    from training.backbones import build_backbone

    keras.utils.set_random_seed(0)
    backbone = build_backbone("efficientnet_lite0", SHAPE, weights=weights, cache_dir=cache)
    freeze_batchnorm(backbone)  # as in fine-tuning
    return assemble(backbone, build_head(1280, 6, 0.2), tta_flip=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_the_simulation_rounds_where_int8_does_and_trains_the_same_weights(cache):
    model = _network("pretrained", cache)  # random weights saturate and pass no gradient
    sim = simulate_int8(model)
    layers = _flat(sim)
    kinds = Counter(type(layer).__name__ for layer in _flat(model))
    # every kernel: the stem, 16 depthwise, 15 expand, 16 project convs and the head conv
    assert sum(isinstance(x, QuantizedKernel) for x in layers) == 1 + 16 + 15 + 16 + 1
    # every kept tensor: the normalised input, 33 ReLU6 outputs, 16 projections, 9 residual
    # adds and the pooled features (a BatchNorm before a ReLU6 is fused, not rounded)
    assert kinds["ReLU"] == 33 and kinds["Add"] == 9
    assert sum(isinstance(x, FakeQuant) for x in layers) == 1 + 33 + 16 + 9 + 1

    originals = {id(x) for x in _flat(model)}
    plain = [x for x in layers if not isinstance(x, (FakeQuant, QuantizedKernel))]
    assert all(id(x) in originals for x in plain if not isinstance(x, keras.layers.InputLayer))

    before = model.get_layer("efficientnet_lite0").get_layer("block15_project_conv").get_weights()
    sim.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).uniform(0, 255, (4, *SHAPE)).astype(np.float32)
    sim.fit(x, np.ones((4, 6), np.float32), epochs=1, verbose=0)
    after = model.get_layer("efficientnet_lite0").get_layer("block15_project_conv").get_weights()
    assert not np.allclose(before[0], after[0]), "training the simulation left the model alone"

    out = [x for x in layers if isinstance(x, FakeQuant)]
    assert all(float(q.lo.numpy()) <= 0.0 <= float(q.hi.numpy()) for q in out)
    features = sim.get_layer("efficientnet_lite0").predict(x, verbose=0)
    assert 16 < len(np.unique(features)) <= 256  # the last ReLU6, on 8 bits


@pytest.mark.slow
def test_the_simulation_predicts_the_int8_model(cache, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from training.config import QuantizeConfig
    from training.quantize import convert, representative
    from wastesort.interpreter import output_details
    from wastesort.manifest import InputSpec
    from wastesort.preprocess import preprocess

    spec = InputSpec(height=SHAPE[0], width=SHAPE[1])
    pixels = np.stack([preprocess(p.read_bytes(), spec) for p in sorted(SAMPLES.rglob("*.jpg"))])
    model = _network("pretrained", cache)
    cfg = QuantizeConfig(modes=("int8",), representative_images=len(pixels))
    int8 = convert(model, tmp_path / "tflite", cfg, pixels)["int8"]

    sim = simulate_int8(model)
    # One training-mode pass over the converter's calibration images: each FakeQuant range
    # becomes their min and max, as the converter's calibration does.
    calibration = np.concatenate([batch[0] for batch in representative(pixels, len(pixels), 0)()])
    sim(calibration, training=True)

    interpreter = Interpreter(model_path=str(int8.path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], output_details(interpreter)["logits"]
    real = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        real.append(interpreter.get_tensor(out["index"])[0].copy())
    real = np.array(real)
    x = pixels.astype(np.float32)

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(a))))

    float_error = rms(model.predict(x, verbose=0) - real)
    sim_error = rms(sim.predict(x, verbose=0) - real)
    # measured: 0.31 against 0.50; rounding the activations alone: no closer than float
    assert sim_error < 0.75 * float_error, (sim_error, float_error)
