"""What the light and a bin's camera do to a photo, as training augmentation: white balance,
blur, sensor noise, JPEG.

TrashNet's studio photos are sharp, clean, lit one way and saved at high quality; a camera in a
bin sees other light, is often a little out of focus or shaken, noisy in the dark and saves
small JPEGs. Exposure is `brightness`/`contrast` in `training.model.augmenter`; blur, noise and
JPEG are issue 34's fifth lever. Each image gets its own strength, from none to the configured
most, so the model also keeps seeing clean photos. Pixels are float in [0, 255]; every step is
the identity outside training.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers


class _PerImage(layers.Layer):
    """A seeded training-only step over a batch of float pixels; one HWC image works too, and
    any input dtype. Subclasses implement `transform` on (N, H, W, C) float32."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = True):
        if not training:
            return images
        x = tf.cast(images, tf.float32)
        single = x.shape.rank == 3
        out = self.transform(x[None] if single else x)
        return out[0] if single else out

    def transform(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


class RandomWhiteBalance(_PerImage):
    """Scales each colour channel by its own gain drawn from [1 - factor, 1 + factor].

    That is what the colour of the light does to a photo (a warm lamp raises red and lowers
    blue); brightness and contrast move all three channels together and do not cover it.
    """

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.factor = factor

    def transform(self, x: tf.Tensor) -> tf.Tensor:
        shape = (tf.shape(x)[0], 1, 1, x.shape[-1])
        gain = keras.random.uniform(shape, 1 - self.factor, 1 + self.factor, seed=self.generator)
        return tf.clip_by_value(x * gain, 0, 255)


class RandomBlur(_PerImage):
    """Blends each image towards its Gaussian blur (`sigma` pixels) by its own share in [0, 1).

    One fixed separable kernel with mirrored borders, so it stays cheap inside tf.data; the
    per-image share runs from sharp to fully blurred.
    """

    def __init__(self, sigma: float, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.sigma = sigma
        self.radius = max(1, math.ceil(2 * sigma))
        taps = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-self.radius, self.radius + 1)]
        self.taps = [t / sum(taps) for t in taps]

    def transform(self, x: tf.Tensor) -> tf.Tensor:
        r, channels = self.radius, x.shape[-1]
        k = tf.constant(self.taps, tf.float32)
        padded = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="SYMMETRIC")  # no dark rim
        rows = tf.tile(tf.reshape(k, (-1, 1, 1, 1)), (1, 1, channels, 1))
        cols = tf.tile(tf.reshape(k, (1, -1, 1, 1)), (1, 1, channels, 1))
        blurred = tf.nn.depthwise_conv2d(padded, rows, (1, 1, 1, 1), "VALID")
        blurred = tf.nn.depthwise_conv2d(blurred, cols, (1, 1, 1, 1), "VALID")
        share = keras.random.uniform((tf.shape(x)[0], 1, 1, 1), 0, 1, seed=self.generator)
        return x + share * (blurred - x)


class RandomNoise(_PerImage):
    """Adds Gaussian sensor noise whose standard deviation, per image, is drawn from
    [0, `stddev`] (in pixel values), then clips to [0, 255]."""

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.stddev = stddev

    def transform(self, x: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x)[0]
        scale = keras.random.uniform((n, 1, 1, 1), 0, self.stddev, seed=self.generator)
        noise = scale * keras.random.normal(tf.shape(x), seed=self.generator)
        return tf.clip_by_value(x + noise, 0, 255)


class RandomJpeg(_PerImage):
    """Re-encodes each image as a JPEG of its own quality in [`min_quality`, 100]: the blocks
    and smeared colour of a bin camera's small files."""

    def __init__(self, min_quality: int, seed: int | None = None, **kwargs):
        super().__init__(seed, **kwargs)
        self.min_quality = min_quality

    def transform(self, x: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x)[0]
        quality = keras.random.randint((n,), self.min_quality, 101, seed=self.generator)

        def one(args):
            image, q = args
            pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
            return tf.cast(tf.image.adjust_jpeg_quality(pixels, q), tf.float32)

        out = tf.map_fn(one, (x, tf.cast(quality, tf.int32)), fn_output_signature=tf.float32)
        return tf.ensure_shape(out, x.shape)


def camera_steps(blur: float, noise: float, jpeg_quality: int, seed: int) -> list[layers.Layer]:
    """The camera's steps in the order a camera applies them (optics, sensor, encoder); none
    when all three are off."""
    steps: list[layers.Layer] = []
    if blur:
        steps.append(RandomBlur(blur, seed=seed))
    if noise:
        steps.append(RandomNoise(noise, seed=seed + 1))
    if jpeg_quality < 100:
        steps.append(RandomJpeg(jpeg_quality, seed=seed + 2))
    return steps
