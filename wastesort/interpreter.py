"""One TFLite interpreter and its tensor bookkeeping: which input, which outputs by name.

A model exported by training has two outputs, `logits` and `embedding`, whose order in
`get_output_details()` is not theirs to keep (with two outputs the embedding comes first), so
they are looked up by their signature names. A model with one output (every artifact published
before the embedding existed, and bare files) has that output as `logits`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wastesort import scoring
from wastesort.errors import ModelError
from wastesort.runtime import RuntimeInfo

LOGITS = "logits"
EMBEDDING = "embedding"


def output_details(interpreter: Any) -> dict[str, dict[str, Any]]:
    """The model's outputs by name: `{"logits": details}` for a one-output model, the
    signature runner's names otherwise.

    Raises:
        ModelError: several outputs, but no signature that names a `logits` one.
    """
    outputs = interpreter.get_output_details()
    if len(outputs) == 1:
        return {LOGITS: outputs[0]}
    try:
        named = dict(interpreter.get_signature_runner().get_output_details())
    except (ValueError, AttributeError, RuntimeError) as exc:
        raise ModelError(
            f"the model has {len(outputs)} outputs and no signature naming them ({exc})"
        ) from None
    if LOGITS not in named:
        raise ModelError(
            f"the model has {len(outputs)} outputs but none named {LOGITS!r} "
            f"(found {sorted(named)}); export it with dict outputs"
        )
    return named


class Slot:
    """One interpreter and its tensor bookkeeping; used by one thread at a time."""

    def __init__(self, interpreter: Any, info: RuntimeInfo) -> None:
        self.interpreter = interpreter
        self.info = info
        self.input = interpreter.get_input_details()[0]
        self.outputs = output_details(interpreter)
        self.output = self.outputs[LOGITS]
        signature = self.input.get("shape_signature")
        self.dynamic_batch = signature is not None and len(signature) and signature[0] == -1
        self.batch = int(self.input["shape"][0])

    def run(self, arrays: np.ndarray, names: tuple[str, ...] = (LOGITS,)) -> dict[str, np.ndarray]:
        """Preprocessed uint8 images (N, H, W, 3) -> the de-quantized outputs named `names`."""
        scale, zero_point = self.input["quantization"]
        batch = scoring.quantize(arrays, np.dtype(self.input["dtype"]).name, scale, zero_point)
        if self.dynamic_batch:
            return self._invoke(batch, names)
        parts = [self._invoke(batch[i : i + 1], names) for i in range(len(batch))]
        return {name: np.concatenate([p[name] for p in parts]) for name in names}

    def _invoke(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        if len(batch) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(batch)
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        result = {}
        for name in names:
            details = self.outputs[name]
            raw = self.interpreter.get_tensor(details["index"])
            scale, zero_point = details["quantization"]
            result[name] = scoring.dequantize(raw, scale, zero_point)
        return result
