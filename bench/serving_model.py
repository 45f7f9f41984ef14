"""A stand-in for the bundled model, for the serving benchmarks while it is being trained:
the production architecture (EfficientNet-Lite0 at 256x192 + the head, from `training/`;
MobileNetV2 if that cannot be built) with random weights, saved as `.keras` and converted to
an int8 TFLite with uint8 input and float32 logits like the real one, published to a local
registry. Same graph on both sides, so the benchmark compares serving stacks, not models.

    python -m bench.serving_model OUT_DIR      # writes OUT_DIR/model.keras, OUT_DIR/registry
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from wastesort.manifest import InputSpec, OutputSpec
from wastesort.preprocess import preprocess
from wastesort.registry import GoldenSample, Registry

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]
HEIGHT, WIDTH = 256, 192


def build_model() -> tuple[keras.Model, str]:
    keras.utils.set_random_seed(0)
    try:
        from training.backbones import build_backbone
        from training.model import assemble, build_head

        backbone = build_backbone(
            "efficientnet_lite0", (HEIGHT, WIDTH, 3), weights=None, cache_dir=Path("/tmp")
        )
        head = build_head(int(backbone.output_shape[-1]), len(LABELS), 0.2)
        return assemble(backbone, head, tta_flip=False), "efficientnet_lite0 (training/)"
    except Exception as exc:  # training/ is another team's moving code; fall back
        print(f"training/ backbone unavailable ({exc}); using MobileNetV2", file=sys.stderr)
        inputs = keras.Input((HEIGHT, WIDTH, 3))
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
        base = keras.applications.MobileNetV2(
            input_shape=(HEIGHT, WIDTH, 3), include_top=False, weights=None, pooling="avg"
        )
        return keras.Model(inputs, keras.layers.Dense(len(LABELS))(base(x))), "mobilenet_v2"


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model, arch = build_model()
    model.save(out / "model.keras")
    spec = InputSpec(height=HEIGHT, width=WIDTH, dtype="uint8")
    images = [p.read_bytes() for p in sorted((ROOT / "samples").rglob("*.jpg"))]
    arrays = np.stack([preprocess(data, spec) for data in images]).astype(np.float32)

    def representative():
        for i in range(len(arrays)):
            yield [arrays[i : i + 1]]

    with tempfile.TemporaryDirectory() as tmp:
        signature = tf.TensorSpec((1, HEIGHT, WIDTH, 3), tf.float32)
        model.export(tmp, format="tf_saved_model", input_signature=[signature], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
        tflite = converter.convert()
    (out / "model.tflite").write_bytes(tflite)
    interpreter = tf.lite.Interpreter(model_content=tflite)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    registry = Registry.from_uri(out / "registry", cache_dir=out / "cache")
    registry.publish(
        out / "model.tflite",
        version="standin-1",
        labels=LABELS,
        input=InputSpec(
            height=HEIGHT, width=WIDTH, dtype="uint8", scale=scale or 1.0, zero_point=zero_point
        ),
        output=OutputSpec(kind="logits", dtype="float32"),
        metrics={"note": f"random-weight stand-in: {arch}"},
        golden=[GoldenSample("glass.jpg", images[3], "glass")],
        aliases=["production"],
    )
    (out / "ARCH").write_text(arch + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
