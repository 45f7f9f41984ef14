"""What a bin's camera does to a photo, as training augmentation: blur, sensor noise, JPEG.

TrashNet's studio photos are sharp, clean and saved at high quality; a camera in a bin is often
a little out of focus or shaken, noisy in the dark and saves small JPEGs. Colour temperature and
exposure are `white_balance` and `brightness`/`contrast` in `training.model.augmenter`; these
three complete the camera (issue 34's fifth lever). Each image gets its own strength, from none
to the configured most, so the model also keeps seeing clean photos. Pixels are float in
[0, 255]; every step is the identity outside training.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers


def _batched(images) -> tuple[tf.Tensor, bool]:
    """Float pixels with a batch axis (any input dtype), and whether one image came in."""
    images = tf.cast(images, tf.float32)
    single = images.shape.rank == 3
    return (images[None] if single else images), single


class RandomBlur(layers.Layer):
    """Blends each image towards its Gaussian blur (`sigma` pixels) by its own share in [0, 1).

    One fixed separable kernel with mirrored borders, so it stays cheap inside tf.data; the
    per-image share runs from sharp to fully blurred.
    """

    def __init__(self, sigma: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.sigma = sigma
        self.generator = keras.random.SeedGenerator(seed)
        radius = max(1, math.ceil(2 * sigma))
        taps = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
        self.taps = [t / sum(taps) for t in taps]
        self.radius = radius

    def call(self, images, training: bool = True):
        if not training:
            return images
        x, single = _batched(images)
        r, channels = self.radius, x.shape[-1]
        k = tf.constant(self.taps, tf.float32)
        padded = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="SYMMETRIC")  # no dark rim
        rows = tf.tile(tf.reshape(k, (-1, 1, 1, 1)), (1, 1, channels, 1))
        cols = tf.tile(tf.reshape(k, (1, -1, 1, 1)), (1, 1, channels, 1))
        blurred = tf.nn.depthwise_conv2d(padded, rows, (1, 1, 1, 1), "VALID")
        blurred = tf.nn.depthwise_conv2d(blurred, cols, (1, 1, 1, 1), "VALID")
        share = keras.random.uniform((tf.shape(x)[0], 1, 1, 1), 0, 1, seed=self.generator)
        out = x + share * (blurred - x)
        return out[0] if single else out


class RandomNoise(layers.Layer):
    """Adds Gaussian sensor noise whose standard deviation, per image, is drawn from
    [0, `stddev`] (in pixel values), then clips to [0, 255]."""

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = True):
        if not training:
            return images
        x, single = _batched(images)
        n = tf.shape(x)[0]
        scale = keras.random.uniform((n, 1, 1, 1), 0, self.stddev, seed=self.generator)
        noise = scale * keras.random.normal(tf.shape(x), seed=self.generator)
        out = tf.clip_by_value(x + noise, 0, 255)
        return out[0] if single else out


class RandomJpeg(layers.Layer):
    """Re-encodes each image as a JPEG of its own quality in [`min_quality`, 100]: the blocks
    and smeared colour of a bin camera's small files."""

    def __init__(self, min_quality: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.min_quality = min_quality
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = True):
        if not training:
            return images
        x, single = _batched(images)
        n = tf.shape(x)[0]
        quality = keras.random.randint((n,), self.min_quality, 101, seed=self.generator)

        def one(args):
            image, q = args
            pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
            return tf.cast(tf.image.adjust_jpeg_quality(pixels, q), tf.float32)

        out = tf.map_fn(one, (x, tf.cast(quality, tf.int32)), fn_output_signature=tf.float32)
        out = tf.ensure_shape(out, x.shape)
        return out[0] if single else out


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
