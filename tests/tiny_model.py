"""Build a tiny int8 TFLite classifier for tests (run in a subprocess: keeps TensorFlow out of
the test process, so tests can assert the serving path never imports it).

    python tests/tiny_model.py OUT_DIR

writes OUT_DIR/tiny_int8.tflite (uint8 input 48x64, int8 logits, dynamic batch),
OUT_DIR/tiny_float.tflite (float32 input and output, batch 1) and
OUT_DIR/named/tiny_int8.tflite: the int8 model's twin with the same weights and two named
outputs, `logits` and `embedding` (the pooled features), as training exports them. The twin
lives in a subfolder so tests that pick "another model" from OUT_DIR never meet it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

HEIGHT, WIDTH, CLASSES = 48, 64, 6


def build(*, named: bool = False) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(7)
    inputs = tf.keras.Input((HEIGHT, WIDTH, 3), dtype="uint8")
    x = tf.keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(x)
    logits = tf.keras.layers.Dense(CLASSES)(pooled)
    if named:  # dict outputs: the only way the signature carries usable output names
        return tf.keras.Model(inputs, {"logits": logits, "embedding": pooled})
    return tf.keras.Model(inputs, logits)


def int8(model: tf.keras.Model) -> bytes:
    rng = np.random.default_rng(0)  # the same calibration images for both twins
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.integers(0, 256, (1, HEIGHT, WIDTH, 3)).astype(np.uint8)] for _ in range(16)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
        return converter.convert()


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = build()
    (out / "tiny_int8.tflite").write_bytes(int8(model))
    (out / "named").mkdir(exist_ok=True)
    (out / "named" / "tiny_int8.tflite").write_bytes(int8(build(named=True)))

    with tempfile.TemporaryDirectory() as tmp:
        spec = tf.TensorSpec((1, HEIGHT, WIDTH, 3), tf.float32)
        model.export(tmp, format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        (out / "tiny_float.tflite").write_bytes(converter.convert())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
