"""Training augmentation: the colour-of-light (white balance) step and the seeded augmenter."""

from __future__ import annotations

import numpy as np

from training.config import AugmentConfig
from training.features import pipeline
from training.model import RandomWhiteBalance, augmenter

# Every geometric and brightness step off, so only the colour step acts.
COLOUR_ONLY = {"flip_horizontal": False, "flip_vertical": False, "rotation": 0, "zoom": 0,
               "translation": 0, "brightness": 0, "contrast": 0}  # fmt: skip


def grey(n: int = 16, value: float = 100.0) -> np.ndarray:
    return np.full((n, 8, 6, 3), value, np.float32)


def test_white_balance_gives_each_image_its_own_per_channel_gain_within_the_factor():
    out = np.asarray(RandomWhiteBalance(0.2, seed=1)(grey(), training=True))
    gains = out / 100.0
    # One gain per image and channel: every pixel of an image moves the same way.
    np.testing.assert_allclose(gains, gains[:, :1, :1, :].repeat(8, 1).repeat(6, 2), rtol=1e-6)
    per_image = gains[:, 0, 0, :]
    assert 0.8 <= per_image.min() < 0.85 and 1.15 < per_image.max() <= 1.2  # the whole range
    assert np.ptp(per_image, axis=1).min() > 0  # the channels differ: a colour cast, not brightness
    assert len({tuple(g.round(4)) for g in per_image}) == len(per_image)


def test_white_balance_clips_to_the_pixel_range_and_is_off_outside_training():
    layer = RandomWhiteBalance(0.5, seed=1)
    bright = grey(value=250.0)
    assert np.asarray(layer(bright, training=True)).max() <= 255.0
    np.testing.assert_array_equal(np.asarray(layer(bright, training=False)), bright)
    single = np.asarray(layer(bright[0], training=True))  # one HWC image works too
    assert single.shape == bright[0].shape and np.ptp(single[0, 0]) > 0


def test_the_augmenter_adds_white_balance_only_when_asked_and_is_seeded():
    names = [type(s).__name__ for s in augmenter(AugmentConfig(), 0).layers]
    assert "RandomWhiteBalance" not in names
    cfg = AugmentConfig(white_balance=0.2, **COLOUR_ONLY)
    assert [type(s).__name__ for s in augmenter(cfg, 0).layers] == ["RandomWhiteBalance"]

    pixels = np.full((6, 8, 6, 3), 120, np.uint8)

    def run(augment) -> np.ndarray:  # through tf.data, the way the feature cache uses it
        return np.concatenate([b.numpy() for b in pipeline(pixels, 3, augment)])

    first = run(augmenter(cfg, 7))
    np.testing.assert_array_equal(first, run(augmenter(cfg, 7)))
    assert not np.array_equal(first, run(augmenter(cfg, 8)))
    gains = first[:, 0, 0, :] / 120.0
    assert np.ptp(gains, axis=1).min() > 0
    assert len({tuple(g.round(4)) for g in gains}) == len(gains)  # fresh gains every batch

    # The state advances: the same augmenter gives new gains on the next pass (the next epoch).
    again = augmenter(cfg, 7)
    assert not np.array_equal(run(again), run(again))
