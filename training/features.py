"""Run the frozen part of the network once and cache what it produces.

On this small dataset fine-tuning the whole backbone overfits, so the pipeline trains the
head (and optionally the top blocks) on cached activations of the frozen part: each training
image contributes a few augmented views (the first view is the image itself), computed once
through a `tf.data` pipeline with augmentation on the training split only. That makes an
epoch take a second instead of minutes, while the exported model is still the whole network.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


def pipeline(
    pixels: np.ndarray, batch_size: int, augment: keras.Model | None = None
) -> tf.data.Dataset:
    """uint8 images -> float batches (augmented when `augment` is given), prefetched."""
    ds = tf.data.Dataset.from_tensor_slices(pixels).batch(batch_size)
    ds = ds.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(
            lambda x: tf.clip_by_value(augment(x, training=True), 0.0, 255.0),
            num_parallel_calls=1,  # one augmenter with seeded state: keep the order fixed
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def extract(
    model: keras.Model,
    pixels: np.ndarray,
    *,
    batch_size: int,
    views: int = 1,
    augment: keras.Model | None = None,
    mirror: bool = False,
) -> np.ndarray:
    """Activations for `views` views of each image: shape (views, N, ...).

    View 0 is the image as is (or mirrored left-right when `mirror`), views 1.. are augmented.
    """
    out = []
    for view in range(views):
        if view == 0:
            source = pixels[:, :, ::-1] if mirror else pixels
            ds = pipeline(source, batch_size)
        else:
            ds = pipeline(pixels, batch_size, augment)
        out.append(model.predict(ds, verbose=0).astype(np.float32))
    return np.stack(out)


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached(path: Path, compute: Any) -> np.ndarray:
    """Load `path` (.npy) if present, else compute, save and return."""
    if path.exists():
        log.info("features from cache %s", path)
        return np.load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, value)
    tmp.replace(path)
    return value
