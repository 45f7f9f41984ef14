"""The classifier network: backbone + pooling + dropout + a dense layer that outputs logits.

It takes float pixels in [0, 255] exactly as `wastesort.preprocess` makes them (the int8
TFLite takes the same pixels as uint8, scale 1, zero point 0); normalisation is inside the
backbone. No softmax: the manifest says `kind: logits` and serving applies
softmax(logits / temperature).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from training.backbones import build_backbone, cut_layer
from training.camera import RandomWhiteBalance, camera_steps
from training.config import AugmentConfig, Config


def backbone_for(cfg: Config) -> keras.Model:
    return build_backbone(
        cfg.model.backbone,
        (cfg.input.height, cfg.input.width, 3),
        weights=cfg.model.weights,
        cache_dir=Path(cfg.cache_dir),
        alpha=cfg.model.alpha,
        bn_momentum=cfg.model.bn_momentum,
        stochastic_depth=cfg.model.stochastic_depth,
    )


def build_head(channels: int, classes: int, dropout: float) -> keras.Model:
    """Pooled features -> logits. Trained first, on cached features."""
    inputs = keras.Input((channels,), name="features")
    x = layers.Dropout(dropout, name="head_dropout")(inputs)
    logits = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, logits, name="head")


def split(backbone: keras.Model, top_blocks: int) -> tuple[keras.Model, keras.Model] | None:
    """(trunk, top) sharing the backbone's layers: the trunk stays frozen and its output is
    cached; the top (the last `top_blocks` blocks and the head conv) fine-tunes."""
    name = cut_layer(backbone, top_blocks)
    if name is None:
        return None
    mid = backbone.get_layer(name).output
    trunk = keras.Model(backbone.input, mid, name="trunk")
    top = keras.Model(mid, backbone.output, name="top")
    return trunk, top


def freeze_batchnorm(model: keras.Model) -> None:
    """BatchNorm layers run in inference mode and keep their ImageNet statistics."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


def assemble(
    backbone: keras.Model, head: keras.Model, *, tta_flip: bool, embedding: bool = False
) -> keras.Model:
    """The model: pixels (H, W, 3) float in [0, 255] -> logits.

    With `tta_flip` the graph averages the logits of the image and its mirror image, so every
    consumer gets test-time augmentation without knowing about it. With `embedding` (the
    exported model only; training keeps one output) the outputs are a dict, `logits` and
    `embedding` (the pooled features, the mean of both views with `tta_flip`): dict outputs
    are what give the TFLite signature its output names.
    """
    inputs = keras.Input(backbone.input_shape[1:], name="pixels")
    pool = layers.GlobalAveragePooling2D(name="avg_pool")
    features = pool(backbone(inputs))
    out = head(features)
    if tta_flip:
        mirrored = layers.Lambda(lambda t: ops.flip(t, axis=2), name="mirror")(inputs)
        mirrored_features = pool(backbone(mirrored))
        out = layers.Average(name="tta_mean")([out, head(mirrored_features)])
        if embedding:
            features = layers.Average(name="embedding_mean")([features, mirrored_features])
    if embedding:
        return keras.Model(inputs, {"logits": out, "embedding": features}, name="wastesort")
    return keras.Model(inputs, out, name="wastesort")


def with_embedding(model: keras.Model) -> keras.Model:
    """The export of an `assemble`d one-output model: the same layers (weights shared), with
    the `embedding` output added."""
    head = model.get_layer("head")
    backbone = next(
        layer for layer in model.layers if isinstance(layer, keras.Model) and layer is not head
    )
    tta = any(layer.name == "tta_mean" for layer in model.layers)
    return assemble(backbone, head, tta_flip=tta, embedding=True)


def augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential:
    """Training-only augmentation over float pixels in [0, 255]; runs inside tf.data."""
    steps: list[layers.Layer] = []
    mode = {
        (True, True): "horizontal_and_vertical",
        (True, False): "horizontal",
        (False, True): "vertical",
    }.get((cfg.flip_horizontal, cfg.flip_vertical))
    if mode:
        steps.append(layers.RandomFlip(mode, seed=seed))
    if cfg.rotation:
        steps.append(layers.RandomRotation(cfg.rotation, fill_mode="nearest", seed=seed + 1))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="nearest", seed=seed + 2))
    if cfg.translation:
        steps.append(
            layers.RandomTranslation(
                cfg.translation, cfg.translation, fill_mode="nearest", seed=seed + 3
            )
        )
    if cfg.brightness:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 4))
    if cfg.contrast:
        steps.append(layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 5))
    if cfg.white_balance:
        steps.append(RandomWhiteBalance(cfg.white_balance, seed=seed + 6))
    steps += camera_steps(cfg.blur, cfg.noise, cfg.jpeg_quality, seed=seed + 7)
    return keras.Sequential(steps, name="augment")
