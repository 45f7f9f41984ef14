"""Export the Keras model and convert it to TFLite: float32, float16, dynamic range, int8.

Conversion goes through a SavedModel (`model.export(..., format="tf_saved_model")` then
`TFLiteConverter.from_saved_model`): converting a Keras 3 model through concrete functions
leaves variable reads that crash int8 calibration. The int8 model is full-integer with a uint8
input whose quantization is scale 1, zero point 0, so `wastesort.preprocess`'s pixels feed it
unchanged (checked here, not assumed).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from training import rounding
from training.config import GateConfig, QuantizeConfig
from training.model import with_embedding
from wastesort.interpreter import LOGITS, output_details

log = logging.getLogger(__name__)

_FLOAT = {"float32", "float16", "float64"}


class QuantizationError(RuntimeError):
    """The converter produced something the serving contract cannot use."""


class GateError(RuntimeError):
    """The int8 model lost too much against the float model; publishing is refused."""


@dataclass
class Variant:
    mode: str
    path: Path
    size: int
    input: dict[str, Any]
    output: dict[str, Any]
    """The logits output."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every output by signature name (`logits`, `embedding`)."""
    integer_only: bool | None = None
    float_ops: list[str] = field(default_factory=list)


def export_saved_model(model: keras.Model, directory: Path) -> Path:
    """SavedModel with a static batch of 1: what every consumer invokes, and what the Edge TPU
    compiler needs (it refuses dynamic shapes)."""
    shape = (1, *model.input_shape[1:])
    model.export(
        str(directory),
        format="tf_saved_model",
        input_signature=[tf.TensorSpec(shape, tf.float32, name="pixels")],
        verbose=False,
    )
    return directory


def _chosen(pixels: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(len(pixels), size=min(count, len(pixels)), replace=False)


def representative(pixels: np.ndarray, count: int, seed: int) -> Any:
    """Calibration images from the training split. The first has one pixel set to 0 and one
    to 255 so the input range is exactly [0, 255] (scale 1, zero point 0) whatever the photos
    hold, without an artificial frame widening the ranges deeper in the network."""
    chosen = _chosen(pixels, count, seed)

    def gen() -> Iterator[list[np.ndarray]]:
        first = pixels[chosen[0] : chosen[0] + 1].astype(np.float32)
        first[0, 0, 0] = 0.0
        first[0, 0, 1] = 255.0
        yield [first]
        for i in chosen[1:]:
            yield [pixels[i : i + 1].astype(np.float32)]

    return gen


def _converter(saved: Path, mode: str, cfg: QuantizeConfig, rep: Any) -> tf.lite.TFLiteConverter:
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[
            cfg.int8_output
        ]
    return conv


def _io(detail: dict[str, Any]) -> dict[str, Any]:
    scale, zero_point = detail["quantization"]
    return {
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale) or 1.0,
        "zero_point": int(zero_point),
    }


def inspect(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """(input, outputs by name, ops that touch float tensors) of a `.tflite` file; the
    outputs are found by signature name (`wastesort.interpreter.output_details`)."""
    # No default delegates: XNNPACK would fold the graph into one DELEGATE op.
    interp = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    tensors = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    float_ops = []
    for op in interp._get_ops_details():
        used = [*op["inputs"], *op["outputs"]]
        if any(tensors.get(i) in _FLOAT for i in used if i >= 0):
            float_ops.append(op["op_name"])
    outputs = {name: _io(detail) for name, detail in output_details(interp).items()}
    return _io(interp.get_input_details()[0]), outputs, float_ops


def convert(
    model: keras.Model,
    out_dir: Path,
    cfg: QuantizeConfig,
    train_pixels: np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, Variant]:
    """Write `model_<mode>.tflite` for every configured mode; returns them by mode. With
    `kernel_rounding: gptq` the int8 file comes from a second SavedModel exported with the
    GPTQ-rounded kernels in place; the model keeps its own kernels. Every file has two named
    outputs, `logits` and `embedding` (`model.with_embedding`); the int8 output type applies to
    both.

    Raises:
        QuantizationError: the int8 input is not uint8 with scale 1 and zero point 0.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    exported = with_embedding(model)  # the same layers: GPTQ's kernels reach it too
    saved = export_saved_model(exported, out_dir.parent / "saved_model")
    int8_saved = saved
    if cfg.kernel_rounding == "gptq" and "int8" in cfg.modes:  # only the int8 file uses them
        images = train_pixels[_chosen(train_pixels, rounding.HESSIAN_IMAGES, seed)]
        with rounding.kernels_replaced(rounding.gptq_kernels(model, images)):
            int8_saved = export_saved_model(exported, out_dir.parent / "saved_model_gptq")
    rep = representative(train_pixels, cfg.representative_images, seed)
    variants: dict[str, Variant] = {}
    for mode in cfg.modes:
        path = out_dir / f"model_{mode}.tflite"
        source = int8_saved if mode == "int8" else saved
        path.write_bytes(_converter(source, mode, cfg, rep).convert())
        inp, outputs, float_ops = inspect(path)
        out = outputs[LOGITS]
        variant = Variant(mode, path, path.stat().st_size, inp, out, outputs)
        if mode == "int8":
            if (inp["dtype"], inp["scale"], inp["zero_point"]) != ("uint8", 1.0, 0):
                raise QuantizationError(
                    f"int8 model input is {inp['dtype']} scale {inp['scale']} zero point "
                    f"{inp['zero_point']}; serving feeds uint8 pixels and needs scale 1, zp 0"
                )
            variant.float_ops = float_ops
            variant.integer_only = not float_ops
        variants[mode] = variant
        log.info("%s: %.2f MB, in %s, out %s", mode, variant.size / 1e6, inp, out)
    return variants


def compile_edgetpu(int8: Path, out_dir: Path) -> tuple[Path | None, str]:
    """Run `edgetpu_compiler` when it is on PATH; returns (path or None, what happened)."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return None, "skipped: edgetpu_compiler is not on PATH"
    result = subprocess.run(  # noqa: S603 (a fixed tool on PATH, our own file)
        [compiler, "-s", "-o", str(out_dir), str(int8)],
        capture_output=True,
        text=True,
        check=False,
    )
    compiled = out_dir / f"{int8.stem}_edgetpu.tflite"
    if result.returncode != 0 or not compiled.exists():
        return None, f"edgetpu_compiler failed: {result.stderr.strip()[-500:]}"
    return compiled, "compiled"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    float_accuracy: float
    int8_accuracy: float
    accuracy_drop: float
    agreement: float
    reasons: tuple[str, ...]

    def message(self) -> str:
        head = "quantization gate passed" if self.passed else "quantization gate FAILED"
        detail = (
            f"int8 accuracy {self.int8_accuracy:.4f} vs float {self.float_accuracy:.4f} "
            f"(drop {self.accuracy_drop * 100:.2f} points), agreement {self.agreement:.4f}"
        )
        return f"{head}: {detail}" + ("".join(f"; {r}" for r in self.reasons))


def gate(
    float_pred: np.ndarray, int8_pred: np.ndarray, y_true: np.ndarray, cfg: GateConfig
) -> GateResult:
    """Compare int8 with float predictions on the test split."""
    fa = float((float_pred == y_true).mean())
    ia = float((int8_pred == y_true).mean())
    agreement = float((float_pred == int8_pred).mean())
    drop = fa - ia
    reasons = []
    if drop > cfg.max_accuracy_drop + 1e-9:
        reasons.append(
            f"accuracy drop {drop * 100:.2f} points > allowed {cfg.max_accuracy_drop * 100:.2f} "
            "(quantize.gate.max_accuracy_drop)"
        )
    if agreement < cfg.min_agreement - 1e-9:
        reasons.append(
            f"agreement {agreement:.4f} < required {cfg.min_agreement:.4f} "
            "(quantize.gate.min_agreement)"
        )
    return GateResult(not reasons, fa, ia, drop, agreement, tuple(reasons))
