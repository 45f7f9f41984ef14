"""Grad-CAM: where in a photo the float model looked for the class it answered.

A model can be right for the wrong reason (the floor, the white sheet) and then fail off its
training photos; a heat map over the photo tells a background shortcut from a real cue. The
int8 TFLite has no gradients, so this runs the run's float Keras model, rebuilt from the run
folder (`config.json`, `labels.txt`, `model.weights.h5`), on exactly what serving feeds it
(`wastesort.preprocess`). The map is taken at the backbone's last feature map (the nested
model whose output is spatial, found by structure), weighted by the gradient of the class's
logit, and mapped back onto the photo through the input spec's resize rule.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from PIL import Image, ImageDraw, ImageFont, ImageOps

from training.backbones import build_backbone
from training.config import InputConfig
from training.data import input_spec
from training.model import assemble, build_head
from wastesort.manifest import InputSpec
from wastesort.preprocess import load_image, to_tensor
from wastesort.scoring import softmax

WEIGHTS, CONFIG, LABELS = "model.weights.h5", "config.json", "labels.txt"


class ExplainError(ValueError):
    """The run folder holds no float model, or the model has no feature map to explain."""


@dataclass(frozen=True)
class Parts:
    """The pieces of an assembled model that Grad-CAM runs one by one."""

    backbone: keras.Model
    """Pixels -> the last spatial feature map."""
    pool: layers.Layer
    head: keras.Model
    tta_flip: bool
    """The model averages the logits of the photo and its mirror image."""


def parts(model: keras.Model) -> Parts:
    """Find the backbone (the nested model with a spatial output), the pooling and the head
    (the nested model taking a vector) by structure, not by name.

    Raises:
        ExplainError: the model is not shaped that way.
    """
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    backbone = next((m for m in nested if len(m.output.shape) == 4), None)
    head = next((m for m in nested if len(m.input.shape) == 2), None)
    pool = next((la for la in model.layers if isinstance(la, layers.GlobalAveragePooling2D)), None)
    if backbone is None or head is None or pool is None:
        raise ExplainError("the model has no backbone feature map and head to explain")
    tta = any(isinstance(layer, layers.Average) for layer in model.layers)
    return Parts(backbone=backbone, pool=pool, head=head, tta_flip=tta)


@dataclass
class RunModel:
    """A run's float model, with what it takes and what it answers."""

    model: keras.Model
    labels: list[str]
    spec: InputSpec
    temperature: float
    """The float model's fitted temperature (`summary.json`), else 1."""


def _spatial(backbone: keras.Model) -> bool:
    return all((d or 0) > 1 for d in backbone.output.shape[1:3])


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _rebuild(recorded: dict[str, Any], inp: InputConfig, classes: int) -> keras.Model:
    """The recorded config's network, with untrained weights (the run's file fills them)."""
    m = recorded.get("model", {})
    backbone = build_backbone(
        m.get("backbone", "efficientnet_lite0"),
        (inp.height, inp.width, 3),
        weights=None,
        cache_dir=Path(recorded.get("cache_dir", ".cache/training")),
        alpha=m.get("alpha", 1.0),
        bn_momentum=m.get("bn_momentum", 0.9),
        stochastic_depth=m.get("stochastic_depth", 0.0),
    )
    head = build_head(backbone.output_shape[-1], classes, m.get("dropout", 0.2))
    return assemble(backbone, head, tta_flip=m.get("tta_flip", False))


def load_run(run_dir: Path) -> RunModel:
    """Rebuild a run's float model from its folder.

    Raises:
        ExplainError: no such folder, or it lacks the config, the labels or the float weights.
    """
    run_dir = Path(run_dir)
    missing = [n for n in (CONFIG, LABELS, WEIGHTS) if not (run_dir / n).is_file()]
    if missing:
        raise ExplainError(
            f"{run_dir} holds no float model to explain (missing {', '.join(missing)})"
        )
    labels = (run_dir / LABELS).read_text().split()
    try:
        recorded: dict[str, Any] = json.loads((run_dir / CONFIG).read_text())
        inp = InputConfig.model_validate(recorded.get("input", {}))
        model = _rebuild(recorded, inp, len(labels))
    except (ValueError, TypeError, AttributeError) as exc:  # JSON, pydantic, an unknown backbone
        raise ExplainError(f"{run_dir / CONFIG} cannot rebuild the model: {_line(exc)}") from None
    try:
        with warnings.catch_warnings():  # Keras warns, and keeps random weights, on a mismatch
            warnings.simplefilter("error")
            model.load_weights(run_dir / WEIGHTS)
    except (ValueError, OSError, UserWarning) as exc:
        raise ExplainError(
            f"{run_dir / WEIGHTS} does not fit the recorded config: {_line(exc)}"
        ) from None
    temperature = 1.0
    summary = run_dir / "summary.json"
    if summary.is_file():
        keras_test = json.loads(summary.read_text()).get("test", {}).get("keras", {})
        temperature = float(keras_test.get("temperature", 1.0))
    return RunModel(model, labels, input_spec(inp), temperature)


def gradcam(
    model: keras.Model, pixels: np.ndarray, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps for a batch of model inputs (N, H, W, 3, [0, 255]).

    Args:
        classes: the class to explain per image; default: the one the model answers.

    Returns:
        (logits (N, classes), maps (N, h, w) in [0, 1] on the feature map's grid; a map is 0
        everywhere when nothing in the photo raised the class's logit).

    Raises:
        ExplainError: the model's feature map is 1x1 (nothing to locate).
    """
    p = parts(model)
    if not _spatial(p.backbone):
        raise ExplainError("the model's last feature map is 1x1: the input is too small")
    x = tf.convert_to_tensor(np.asarray(pixels, np.float32))
    views = [x, tf.reverse(x, axis=[2])] if p.tta_flip else [x]
    with tf.GradientTape() as tape:
        maps = [p.backbone(v, training=False) for v in views]
        logits = tf.add_n([p.head(p.pool(f), training=False) for f in maps]) / len(maps)
        chosen = (
            tf.argmax(logits, axis=1)
            if classes is None
            else tf.constant(np.asarray(classes, np.int64))
        )
        target = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
    grads = tape.gradient(target, maps)
    cams = []
    for k, (f, g) in enumerate(zip(maps, grads, strict=True)):
        weights = tf.reduce_mean(g, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * f, axis=-1))
        cams.append(tf.reverse(cam, axis=[2]) if k == 1 else cam)  # the mirror, mirrored back
    cam = tf.add_n(cams).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam = np.where(peak[:, None, None] > 0, cam / np.maximum(peak, 1e-12)[:, None, None], 0.0)
    return logits.numpy(), cam.astype(np.float32)


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map in [0, 1] resized (bilinear) to `size` (width, height)."""
    image = Image.fromarray(cam.astype(np.float32), mode="F")
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), np.float32)


def on_photo(cam: np.ndarray, photo_size: tuple[int, int], spec: InputSpec) -> np.ndarray:
    """A map over the model input, laid over the original photo (width, height) the way the
    spec's resize rule made the input from it; what the model never saw is 0."""
    width, height = photo_size
    if spec.resize == "squash":
        return upsample(cam, (width, height))
    if spec.resize == "center_crop":  # the input is the photo's centre, at the input's aspect
        scale = max(spec.width / width, spec.height / height)
        cw, ch = round(spec.width / scale), round(spec.height / scale)
        left, top = (width - cw) // 2, (height - ch) // 2
        out = np.zeros((height, width), np.float32)
        out[top : top + ch, left : left + cw] = upsample(cam, (cw, ch))
        return out
    # letterbox: the photo sits inside the input, padded with white
    fitted = ImageOps.contain(Image.new("L", (width, height)), (spec.width, spec.height))
    full = upsample(cam, (spec.width, spec.height))
    left, top = (spec.width - fitted.width) // 2, (spec.height - fitted.height) // 2
    inside = full[top : top + fitted.height, left : left + fitted.width]
    return upsample(inside, (width, height))


def overlay(rgb: np.ndarray, cam: np.ndarray, *, strength: float = 0.5) -> np.ndarray:
    """The photo (H, W, 3 uint8) under the map (H, W) in a heat colour map."""
    import matplotlib as mpl  # noqa: PLC0415 (drawing only)

    heat = mpl.colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255
    alpha = strength * np.clip(cam, 0, 1)[..., None] ** 0.5
    out = (1 - alpha) * rgb.astype(np.float32) + alpha * heat
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def caption(rgb: np.ndarray, lines: Sequence[str]) -> Image.Image:
    """The image with `lines` written top-left on a dark band, sized to the image."""
    image = Image.fromarray(rgb)
    size = max(10, image.height // 24)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    box = (0, 0, max(draw.textlength(t, font=font) for t in lines) + size, (size + 4) * len(lines))
    draw.rectangle(box, fill=(0, 0, 0))
    for k, text in enumerate(lines):
        draw.text((size // 2, 2 + k * (size + 4)), text, fill=(255, 255, 255), font=font)
    return image


@dataclass(frozen=True)
class Explained:
    path: Path
    overlay: Path
    top: list[tuple[str, float]]
    cam: np.ndarray
    """The map over the original photo (its height, width), in [0, 1]."""


def explain_files(
    run: RunModel, images: Sequence[Path], out_dir: Path, *, top: int = 3
) -> list[Explained]:
    """Write `<stem>_gradcam.png` per photo into `out_dir`: the photo at its own size, the map
    of the class the model answered, and its top classes with their scores.

    Raises:
        ImageError: a photo cannot be read (the caller checks them first).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for path in images:
        photo = load_image(Path(path).read_bytes())
        pixels = to_tensor(photo, run.spec)
        logits, cams = gradcam(run.model, pixels[None])
        probs = softmax(logits, run.temperature)[0]
        order = np.argsort(-probs)[:top]
        ranked = [(run.labels[i], float(probs[i])) for i in order]
        cam = on_photo(cams[0], photo.size, run.spec)
        rgb = np.asarray(photo, np.uint8)
        lines = [f"{label} {score:.2f}" for label, score in ranked]
        lines[0] += "  (map)"
        target = out_dir / f"{Path(path).stem}_gradcam.png"
        caption(overlay(rgb, cam), lines).save(target)
        done.append(Explained(Path(path), target, ranked, cam))
    return done
