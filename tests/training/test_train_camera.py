"""The camera steps of training augmentation: blur, sensor noise and JPEG, each per image."""

from __future__ import annotations

import numpy as np
import pytest

from training.camera import RandomBlur, RandomJpeg, RandomNoise
from training.config import AugmentConfig
from training.features import pipeline
from training.model import augmenter

CAMERA_ONLY = {"flip_horizontal": False, "flip_vertical": False, "rotation": 0, "zoom": 0,
               "translation": 0, "brightness": 0, "contrast": 0}  # fmt: skip


def edges(n: int = 8) -> np.ndarray:
    """Sharp vertical stripes: what blur and JPEG visibly change."""
    img = np.zeros((n, 32, 32, 3), np.float32)
    img[:, :, ::4] = 255.0
    return img


@pytest.mark.parametrize("layer", [RandomBlur(2.0, seed=1), RandomNoise(20.0, seed=1),
                                   RandomJpeg(10, seed=1)])  # fmt: skip
def test_each_step_changes_images_in_range_per_image_and_is_off_outside_training(layer):
    x = edges()
    out = np.asarray(layer(x, training=True))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    change = np.abs(out - x).mean(axis=(1, 2, 3))
    assert change.max() > 1.0  # it does something
    assert len(set(change.round(3))) > 1  # and each image its own strength
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    single = np.asarray(layer(x[0], training=True))  # one HWC image works too
    assert single.shape == x[0].shape
    assert np.asarray(layer(x.astype(np.uint8), training=True)).dtype == np.float32  # any dtype


def test_blur_keeps_the_mean_and_flat_images_and_softens_edges():
    flat = np.full((4, 16, 16, 3), 90.0, np.float32)  # reflected borders: no dark rim
    np.testing.assert_allclose(np.asarray(RandomBlur(3.0, seed=2)(flat)), flat, atol=1e-3)
    x = edges(16)
    out = np.asarray(RandomBlur(2.0, seed=2)(x))
    np.testing.assert_allclose(out.mean(), x.mean(), rtol=0.05)
    assert np.abs(np.diff(out, axis=2)).mean() < np.abs(np.diff(x, axis=2)).mean()


def test_low_quality_jpeg_loses_detail_that_high_quality_keeps():
    grey = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 1)).astype(np.float32)
    x = np.repeat(grey, 3, axis=-1)  # luminance detail only (chroma subsampling aside)
    low = np.abs(np.asarray(RandomJpeg(5, seed=3)(x)) - x).mean()
    high = np.abs(np.asarray(RandomJpeg(95, seed=3)(x)) - x).mean()
    assert low > 2 * high


def test_the_augmenter_adds_camera_steps_in_camera_order_through_tf_data_seeded():
    assert not {"RandomBlur", "RandomNoise", "RandomJpeg"} & {
        type(s).__name__ for s in augmenter(AugmentConfig(), 0).layers
    }
    cfg = AugmentConfig(blur=1.5, noise=8, jpeg_quality=30, **CAMERA_ONLY)
    assert [type(s).__name__ for s in augmenter(cfg, 0).layers] == [
        "RandomBlur", "RandomNoise", "RandomJpeg"
    ]  # fmt: skip
    pixels = edges(6).astype(np.uint8)

    def run(augment) -> np.ndarray:  # the way the feature cache runs it
        return np.concatenate([b.numpy() for b in pipeline(pixels, 3, augment)])

    first = run(augmenter(cfg, 7))
    assert first.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(first, run(augmenter(cfg, 7)))
    assert not np.array_equal(first, run(augmenter(cfg, 8)))


def test_the_feature_cache_key_sees_the_camera_only_when_it_is_on():
    plain = AugmentConfig().cache_dump()
    assert not {"blur", "noise", "jpeg_quality"} & set(plain)
    assert AugmentConfig(jpeg_quality=40).cache_dump() == {**plain, "jpeg_quality": 40}
