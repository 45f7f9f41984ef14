"""Kernel rounding for the int8 model chosen by GPTQ, so each conv's output moves less.

The converter stores every conv kernel folded with the BatchNorm after it, per output channel,
symmetric on 8 bits (step = largest |weight| / 127), and rounds each weight to the nearest
step. GPTQ (Frantar et al., 2022) rounds one input column at a time and shifts the columns
not yet rounded to make up for it, weighted by the Hessian of the layer's inputs on
calibration photos, so the conv's output on such photos changes as little as it can. The
result is written into the kernels as floats already on the converter's grid, with each
channel's largest weight unchanged so the step stays the same, and the converter's own
rounding then leaves them as they are (the tests check both).

The Hessians come from the float network, not from the int8 one layer by layer (the paper's
sequential variant). Measured in docs/experiments.md (round 8): int8's logit error falls by
a quarter and its agreement with the float model rises by about half a point; int8 accuracy
does not move.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np
import tensorflow as tf
from keras import layers

log = logging.getLogger(__name__)

HESSIAN_IMAGES = 128
_DAMPING = 0.01  # of the mean diagonal, added to each Hessian (as in the GPTQ paper)
_BATCH = 8


def following_batchnorm(conv: layers.Layer) -> layers.BatchNormalization | None:
    """The BatchNorm that the converter folds into `conv`, if one comes straight after it."""
    nxt = next((node.operation for node in conv._outbound_nodes), None)
    return nxt if isinstance(nxt, layers.BatchNormalization) else None


def fold_scale(conv: layers.Layer) -> tf.Tensor:
    """Per output channel, what the converter multiplies `conv`'s kernel by when folding the
    BatchNorm after it into it (1 where gamma is 0: that channel's output ignores the kernel).
    A tensor, so quantization-aware training reads it in its graph."""
    bn = following_batchnorm(conv)
    if bn is None:
        return tf.ones(conv.kernel.shape[-2 if _depthwise(conv) else -1], tf.float32)
    scale = tf.convert_to_tensor(bn.gamma) / tf.sqrt(bn.moving_variance + bn.epsilon)
    return tf.where(tf.abs(scale) < 1e-12, tf.ones_like(scale), scale)


def _depthwise(conv: layers.Layer) -> bool:
    return isinstance(conv, layers.DepthwiseConv2D)


def _roundable(layer: layers.Layer) -> bool:
    if _depthwise(layer):
        return layer.depth_multiplier == 1 and tuple(layer.dilation_rate) == (1, 1)
    return (
        isinstance(layer, layers.Conv2D)
        and layer.groups == 1
        and tuple(layer.dilation_rate) == (1, 1)
    )


def _owners(
    model: keras.Model, feeders: tuple[keras.Model, ...] = ()
) -> Iterator[tuple[keras.Model, list[layers.Layer], tuple[keras.Model, ...]]]:
    """Each (nested) model with the convs it holds directly, and the models that take the
    pixels to its input, outermost first (a backbone may rescale the pixels before the model
    that holds its convs)."""
    convs = [layer for layer in model.layers if _roundable(layer)]
    if convs:
        yield model, convs, feeders
    for layer in model.layers:
        fed = _fed(model, layer) if isinstance(layer, keras.Model) else None
        if fed is not None:
            if fed is model.inputs[0]:
                yield from _owners(layer, feeders)
            else:
                yield from _owners(layer, (*feeders, keras.Model(model.inputs[0], fed)))


def _fed(model: keras.Model, layer: keras.Model) -> keras.KerasTensor | None:
    """What `model` first feeds `layer`. Not `layer._inbound_nodes[0]`: training calls the
    backbone in other models too (its feature extractor) before the one it exports."""
    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph there
    own = {id(node) for nodes in graph._nodes_by_depth.values() for node in nodes}
    return next((n.input_tensors[0] for n in layer._inbound_nodes if id(n) in own), None)


def _patches(x: np.ndarray, conv: layers.Layer) -> np.ndarray:
    """The conv's input as (positions, kh * kw, channels), in the kernel's (kh, kw, C) order."""
    kh, kw = conv.kernel_size
    sh, sw = conv.strides
    if (kh, kw) == (1, 1):
        return x[:, ::sh, ::sw, :].reshape(-1, 1, x.shape[-1])
    p = tf.image.extract_patches(
        x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], conv.padding.upper()
    ).numpy()
    return p.reshape(-1, kh * kw, x.shape[-1])


def hessians(model: keras.Model, images: np.ndarray) -> dict[layers.Layer, np.ndarray]:
    """For every conv in `model`, the sum of x xᵀ over every input patch its kernel sees when
    `model` runs on `images` (pixels): (1, k, k) for a conv, whose output channels share the
    input, and (channels, k, k) for a depthwise conv, whose channels each see their own. The
    columns are in the kernel's (kh, kw, C) order."""
    sums: dict[layers.Layer, np.ndarray] = {}
    for owner, convs, feeders in _owners(model):
        probe = keras.Model(owner.inputs[0], [conv.input for conv in convs])
        for start in range(0, len(images), _BATCH):
            x = images[start : start + _BATCH].astype(np.float32)
            for feeder in feeders:
                x = feeder.predict(x, verbose=0)
            outs = probe.predict(x, verbose=0)
            outs = outs if isinstance(outs, list) else [outs]
            for conv, inputs in zip(convs, outs, strict=True):
                p = _patches(inputs, conv)
                if _depthwise(conv):
                    p = np.ascontiguousarray(p.transpose(2, 1, 0))  # (C, kk, positions)
                    h = np.matmul(p, p.transpose(0, 2, 1))
                else:
                    flat = p.reshape(len(p), -1)
                    h = (flat.T @ flat)[None]
                sums[conv] = sums.get(conv, 0) + h.astype(np.float64)
    return sums


def gptq(weights: np.ndarray, hessian: np.ndarray, step: np.ndarray) -> np.ndarray:
    """`weights` (rows, cols) on the grid `step` (per row) x [-127, 127], by GPTQ.

    `hessian` is (1 or rows, cols, cols). Each row's largest weight keeps its value, ±127
    steps, so whoever recomputes the step from the result gets the same one.
    """
    w = weights.astype(np.float64)
    rows, cols = w.shape
    h = hessian.astype(np.float64)
    diag = np.arange(cols)
    d = h[:, diag, diag]
    h[:, diag, diag] += _DAMPING * d.mean(axis=1, keepdims=True) + (d == 0)
    u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)  # upper factor of H⁻¹
    top = np.abs(w).argmax(axis=1)
    top_q = np.sign(w[np.arange(rows), top]) * 127
    q = np.empty_like(w)
    for i in range(cols):
        q[:, i] = np.where(top == i, top_q, np.clip(np.round(w[:, i] / step), -127, 127))
        err = (w[:, i] - q[:, i] * step) / u[:, i, i]
        w[:, i + 1 :] -= err[:, None] * u[:, i, i + 1 :]
    return q * step[:, None]


def gptq_kernels(model: keras.Model, images: np.ndarray) -> dict[layers.Layer, np.ndarray]:
    """For every conv in `model`, its kernel rounded by GPTQ from the inputs that `images`
    (pixels) give it: same shape, float32, on the converter's int8 grid once folded."""
    kernels: dict[layers.Layer, np.ndarray] = {}
    for conv, h in hessians(model, images).items():
        k = conv.kernel.numpy()
        scale = fold_scale(conv).numpy().astype(np.float64)
        folded = k.reshape(-1, len(scale)).T * scale[:, None]  # (output channels, inputs)
        step = np.maximum(np.abs(folded).max(axis=1), 1e-12) / 127
        rounded = gptq(folded, h, step) / scale[:, None]
        kernels[conv] = rounded.T.reshape(k.shape).astype(np.float32)
    log.info("kernel rounding: GPTQ on %d convs from %d images", len(kernels), len(images))
    return kernels


@contextmanager
def kernels_replaced(kernels: dict[layers.Layer, np.ndarray]) -> Iterator[None]:
    """Run the block with these kernels in place; the originals come back afterwards."""
    originals = {conv: conv.kernel.numpy() for conv in kernels}
    try:
        for conv, k in kernels.items():
            conv.kernel.assign(k)
        yield
    finally:
        for conv, k in originals.items():
            conv.kernel.assign(k)
