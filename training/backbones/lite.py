"""EfficientNet-Lite0/1/2 in Keras, laid out so the official ImageNet weights transplant by name.

Lite is EfficientNet without squeeze-excite, with ReLU6 everywhere and the stem (32) and
head (1280) widths fixed: the variant Google made for integer-only accelerators. Lite1 and
Lite2 are deeper (and Lite2 wider) versions of Lite0. Layer names follow the PyTorch state
dict (`_blocks.N._expand_conv` -> `block{N}_expand_conv`), so `transplant` is a table lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

BN_EPSILON = 1e-3
"""As in the TF original; 1e-5 (PyTorch's default) visibly degrades the ImageNet predictions."""

NORM_MEAN = 127.0
NORM_STD = 128.0
"""The Lite models were trained on (x - 127) / 128; the graph does this, no consumer does."""

HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


_KERNELS = (3, 3, 5, 3, 5, 5, 3)
_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_EXPANDS = (1, 6, 6, 6, 6, 6, 6)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # name: (blocks per stage, stage output channels), as in the official weights
    "efficientnet_lite0": ((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite1": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite2": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
}


def _stages(variant: str) -> list[_Stage]:
    repeats, filters = VARIANTS[variant]
    ins = (32, *filters[:-1])
    return [
        _Stage(*row)
        for row in zip(repeats, _KERNELS, _STRIDES, _EXPANDS, ins, filters, strict=True)
    ]


def num_blocks(variant: str) -> int:
    return sum(VARIANTS[variant][0])


def _bn(name: str, momentum: float) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name)


def _geometry(stage: _Stage, first: bool) -> tuple[int, int, bool]:
    """(input channels, stride, residual) of a block: only a stage's first block changes
    the width or the resolution; the others add their input back."""
    filters_in = stage.filters_in if first else stage.filters_out
    stride = stage.stride if first else 1
    return filters_in, stride, stride == 1 and filters_in == stage.filters_out


def _block(
    x: keras.KerasTensor,
    index: int,
    stage: _Stage,
    first: bool,
    *,
    momentum: float,
    drop: float,
) -> keras.KerasTensor:
    p = f"block{index}_"
    filters_in, stride, residual = _geometry(stage, first)
    inputs = x
    if stage.expand != 1:
        x = layers.Conv2D(
            filters_in * stage.expand, 1, padding="same", use_bias=False, name=p + "expand_conv"
        )(x)
        x = _bn(p + "bn0", momentum)(x)
        x = layers.ReLU(6.0, name=p + "expand_relu")(x)
    x = layers.DepthwiseConv2D(
        stage.kernel, strides=stride, padding="same", use_bias=False, name=p + "depthwise_conv"
    )(x)
    x = _bn(p + "bn1", momentum)(x)
    x = layers.ReLU(6.0, name=p + "depthwise_relu")(x)
    x = layers.Conv2D(
        stage.filters_out, 1, padding="same", use_bias=False, name=p + "project_conv"
    )(x)
    x = _bn(p + "bn2", momentum)(x)
    if residual:
        if drop:  # stochastic depth: while training, skip the whole branch for some images
            x = layers.Dropout(drop, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
        x = layers.Add(name=p + "add")([x, inputs])
    return x


def block_boundaries(variant: str) -> list[str]:
    """Names of the layers that end each block, then the head's activation."""
    names = []
    index = 0
    for stage in _stages(variant):
        for r in range(stage.repeats):
            residual = _geometry(stage, r == 0)[2]
            names.append(f"block{index}_" + ("add" if residual else "bn2"))
            index += 1
    names.append("head_relu")
    return names


def build_lite(
    variant: str,
    input_shape: tuple[int, int, int],
    *,
    include_top: bool = False,
    bn_momentum: float = 0.99,
    stochastic_depth: float = 0.0,
) -> keras.Model:
    """Build `variant` (a `VARIANTS` key) over float pixels in [0, 255]; normalisation is
    the model's first layer.

    Args:
        input_shape: (height, width, 3); any size works, the network is fully convolutional.
        include_top: add global pooling and the 1000-class ImageNet classifier (logits).
        bn_momentum: BatchNorm moving-average momentum (only matters when BN is trained).
        stochastic_depth: while training, each residual branch is skipped for an image at a
            rate rising linearly from 0 at the first block to this at the end (the original's
            drop-connect); it adds no weights and does nothing at inference.

    Returns:
        A Keras model whose output is the 1280-channel feature map (or ImageNet logits).
    """
    inputs = keras.Input(input_shape, name="pixels")
    x = layers.Rescaling(1.0 / NORM_STD, offset=-NORM_MEAN / NORM_STD, name="normalize")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn", bn_momentum)(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    index, blocks = 0, num_blocks(variant)
    for stage in _stages(variant):
        for r in range(stage.repeats):
            drop = stochastic_depth * index / blocks
            x = _block(x, index, stage, r == 0, momentum=bn_momentum, drop=drop)
            index += 1
    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn", bn_momentum)(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="imagenet_fc")(x)
    return keras.Model(inputs, x, name=variant)


def _torch_name(layer_name: str) -> str:
    """Keras layer name -> PyTorch parameter prefix."""
    fixed = {
        "stem_conv": "_conv_stem",
        "stem_bn": "_bn0",
        "head_conv": "_conv_head",
        "head_bn": "_bn1",
        "imagenet_fc": "_fc",
    }
    if layer_name in fixed:
        return fixed[layer_name]
    block, _, rest = layer_name.partition("_")
    return f"_blocks.{block.removeprefix('block')}._{rest}"


def transplant(model: keras.Model, state: dict[str, np.ndarray]) -> int:
    """Copy PyTorch Lite weights into `model` (built by `build_lite`); returns tensors used.

    Raises:
        ValueError: a tensor is missing or has the wrong shape, so a silent partial load
            cannot happen.
    """
    used = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_name(layer.name)

        def get(suffix: str, prefix: str = prefix, owner: str = layer.name) -> np.ndarray:
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise ValueError(f"weights file has no tensor {key!r} for layer {owner}")
            return state[key]

        if isinstance(layer, layers.DepthwiseConv2D):
            values = [get("weight").transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
        elif isinstance(layer, layers.Conv2D):
            values = [get("weight").transpose(2, 3, 1, 0)]  # (O,I,kh,kw) -> (kh,kw,I,O)
        elif isinstance(layer, layers.BatchNormalization):
            values = [get(k) for k in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(layer, layers.Dense):
            values = [get("weight").T, get("bias")]
        else:
            raise ValueError(f"no transplant rule for layer {layer.name} ({type(layer).__name__})")
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"shape mismatch for {layer.name}: file {[v.shape for v in values]}, "
                f"model {expected}"
            )
        layer.set_weights(values)
        used += len(values)
    return used
