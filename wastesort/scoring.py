"""The math between the interpreter's raw output and a decision. Pure functions, no I/O.

The API, the edge runner and training's evaluation all call these, so a score means the same
thing everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNCERTAIN = "uncertain"
"""The decision when the model is not sure enough; the one place this word is spelled."""


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Quantized integers -> real values: `scale * (q - zero_point)`. Floats pass through."""
    if np.issubdtype(raw.dtype, np.floating):
        return raw.astype(np.float32, copy=False)
    if scale == 0:  # a tensor the converter left unquantized
        return raw.astype(np.float32)
    return (scale * (raw.astype(np.float32) - zero_point)).astype(np.float32)


def quantize(values: np.ndarray, dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """uint8 pixels -> the model's input dtype.

    A scale of 0 means the input is not quantized (a graph that takes uint8 itself), and
    scale 1 / zero point 0 is the identity; both pass the pixels through unchanged.
    """
    if dtype == "float32":
        return values.astype(np.float32)
    if scale == 0 or (scale == 1.0 and zero_point == 0):
        return values.astype(dtype, copy=False)
    info = np.iinfo(np.dtype(dtype))
    q = np.round(values.astype(np.float32) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature`, stable for large values."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def calibrate(raw: np.ndarray, *, kind: str, temperature: float = 1.0) -> np.ndarray:
    """De-quantized model output -> calibrated probabilities that sum to 1.

    Args:
        raw: logits or probabilities, shape (..., classes).
        kind: `logits` or `probabilities` (as the manifest's output spec says).
        temperature: from temperature scaling on the validation split; 1.0 leaves scores as is.
    """
    if kind == "logits":
        return softmax(raw, temperature)
    probs = np.clip(np.asarray(raw, dtype=np.float64), 1e-12, None)
    if temperature != 1.0:
        return softmax(np.log(probs), temperature)
    return (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)


def is_confident(confidence: float | np.ndarray, threshold: float) -> bool | np.ndarray:
    """The one decision rule: a confidence at or above the threshold is decided, below it is
    `uncertain`. Works elementwise on arrays (calibration sweeps thresholds over many images).
    """
    return confidence >= threshold


def decide(probs: np.ndarray, labels: Sequence[str], threshold: float) -> tuple[str, float, str]:
    """(predicted_class, confidence, decision); the decision is `uncertain` below threshold."""
    best = int(np.argmax(probs))
    confidence = float(probs[best])
    predicted = labels[best]
    return predicted, confidence, (predicted if is_confident(confidence, threshold) else UNCERTAIN)


def ranked(probs: np.ndarray, labels: Sequence[str], top_k: int | None = None) -> dict[str, float]:
    """Class -> probability, highest first, cut to `top_k` when given."""
    order = np.argsort(-probs, kind="stable")
    if top_k is not None:
        order = order[: max(top_k, 1)]
    return {labels[i]: round(float(probs[i]), 6) for i in order}
