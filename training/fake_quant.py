"""Quantization-aware fine-tuning: the int8 model's rounding, simulated in training.

Post-training int8 quantization rounds every kernel (folded with the BatchNorm after it, per
output channel) and every tensor the converter keeps (the normalised input, each conv's
output after its fused BatchNorm and ReLU6, each residual add, the pooled features). A
network whose weights moved in fine-tuning can be sensitive to that rounding, so its int8
model disagrees with the float one more often. `simulate_int8` returns the same network (the
same layers, so the same weights) with both roundings in its graph; training through it
teaches the weights to tolerate them, as TF-MOT's quantization-aware training does for
Keras 2 (it does not support Keras 3). The exported model is the plain one; the converter
still calibrates its own ranges, so the simulation is close to the int8 model, not exact.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from training.rounding import fold_scale

_CONVS = (layers.Conv2D, layers.DepthwiseConv2D)
_QUANTIZED = (layers.Rescaling, layers.ReLU, layers.Add, layers.GlobalAveragePooling2D)


class FakeQuant(layers.Layer):
    """Rounds its input to 8 bits over a range tracked in training (a moving average of the
    batch min and max, always including 0, as TF-MOT does); the gradient passes straight
    through inside the range."""

    def __init__(self, decay: float = 0.99, **kwargs) -> None:
        super().__init__(**kwargs)
        self.decay = decay

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        def var(name: str) -> keras.Variable:
            return self.add_weight(shape=(), initializer="zeros", trainable=False, name=name)

        self.lo, self.hi, self.seen = var("lo"), var("hi"), var("seen")

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if training:
            decay = tf.where(self.seen > 0, self.decay, 0.0)  # the first batch sets the range
            self.lo.assign(decay * self.lo + (1 - decay) * tf.minimum(tf.reduce_min(x), 0.0))
            self.hi.assign(decay * self.hi + (1 - decay) * tf.maximum(tf.reduce_max(x), 0.0))
            self.seen.assign(1.0)
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)

    def get_config(self) -> dict:
        return {**super().get_config(), "decay": self.decay}


class QuantizedKernel(layers.Layer):
    """Runs `conv` with its kernel rounded as int8 stores it: folded with the frozen BatchNorm
    that follows (the converter merges the two), per output channel, symmetric, 8 bits. The
    gradient reaches `conv.kernel` straight through the rounding."""

    def __init__(self, conv: layers.Layer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conv = conv  # tracked: the kernel trains through this layer, the only caller

    def call(self, x: tf.Tensor) -> tf.Tensor:
        conv = self.conv
        kernel = tf.convert_to_tensor(conv.kernel)
        scale = fold_scale(conv)
        channels = scale.shape[0]
        flat = tf.reshape(kernel, (-1, channels)) * scale  # depthwise (kh, kw, C, 1) too
        limit = tf.maximum(tf.stop_gradient(tf.reduce_max(tf.abs(flat), axis=0)), 1e-8)
        flat = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            flat, -limit, limit, num_bits=8, narrow_range=True
        )
        kernel = tf.reshape(flat / scale, kernel.shape)
        if isinstance(conv, layers.DepthwiseConv2D):
            out = keras.ops.depthwise_conv(
                x, kernel, conv.strides, conv.padding, conv.data_format, conv.dilation_rate
            )
        else:
            out = conv.convolution_op(x, kernel)
        if conv.use_bias:  # int8 keeps biases in 32 bits: no rounding worth simulating
            out = out + conv.bias
        return conv.activation(out)


def _quantized(layer: layers.Layer) -> bool:
    """Whether the int8 graph keeps this layer's output as a tensor of its own. A BatchNorm
    folds into the conv before it and, when a ReLU follows, the ReLU's output is the one kept."""
    if isinstance(layer, layers.BatchNormalization):
        consumers = [node.operation for node in layer._outbound_nodes]
        return not any(isinstance(c, layers.ReLU) for c in consumers)
    return isinstance(layer, _QUANTIZED)


def simulate_int8(model: keras.Model) -> keras.Model:
    """`model` (functional, nested models included) with its convolutions run on int8-rounded
    kernels and a `FakeQuant` after every tensor that int8 keeps. The layers are
    `model`'s own, not copies: training the result trains `model`."""

    def call(layer: layers.Layer, *args, **kwargs):
        if isinstance(layer, _CONVS):
            return QuantizedKernel(layer, name=f"{layer.name}_int8")(*args, **kwargs)
        out = layer(*args, **kwargs)
        return FakeQuant(name=f"{layer.name}_fq")(out) if _quantized(layer) else out

    return keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call, recursive=True
    )
