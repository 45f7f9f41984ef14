"""The reference file of a run (`wastesort.reference`), built from the int8 model as it will
serve: its embeddings, calibrated scores and image statistics on every validation photo (all
sources), through `wastesort.Classifier`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wastesort import reference
from wastesort.interpreter import EMBEDDING

if TYPE_CHECKING:
    from training.evaluate import Splits, VariantScores

log = logging.getLogger(__name__)


def write(
    out: Path,
    model: Path,
    int8: VariantScores,
    splits: Splits,
    *,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    batch: int = 64,
) -> Path | None:
    """Write the reference of the int8 model at `model` to `out`.

    Args:
        out: the `.npz` to write.
        model: the int8 `.tflite` (two named outputs).
        int8: its scores; `val_probs` are the calibrated validation scores, in `splits` order.
        splits: the validation photos and labels.
        seed: the seed of the (at most `reference.MAX_ITEMS`) photos kept.
        meta: extra facts (dataset fingerprint, ...).
        batch: images per invoke.

    Returns:
        `out`, or None when the model has no `embedding` output or there is no validation.
    """
    from training.evaluate import classifier  # noqa: PLC0415

    if EMBEDDING not in (int8.entry.outputs or {}) or not splits.val_images:
        log.info("no reference: the model has no embedding output or there is no validation")
        return None
    clf = classifier(int8.entry, model)
    embeddings, stats = [], []
    for start in range(0, len(splits.val_images), batch):
        arrays = np.stack([clf.preprocess(b) for b in splits.val_images[start : start + batch]])
        embeddings.append(clf.outputs_from_arrays(arrays, (EMBEDDING,))[EMBEDDING])
        stats.append(reference.image_stats_batch(arrays))
    ref = reference.build(
        np.concatenate(embeddings),
        int8.val_probs,
        splits.y_val,
        np.concatenate(stats),
        splits.labels,
        seed=seed,
        meta=meta,
    )
    out.write_bytes(ref.dumps())
    log.info(
        "reference: %d validation photos, %d-d projection, %.1f kB",
        len(splits.val_images),
        ref.dims,
        out.stat().st_size / 1e3,
    )
    return out
