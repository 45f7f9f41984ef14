"""Loss weights by source and class, and source-balanced validation weights.

Merging a second source into the class folders tilts the model: 957 cans and bottles made
plastic a third of the data, and both the prior and the calibration followed (issue 32). So:

- a class's total weight comes from the sources that hold every class (with `train.class_weights`
  applied to their counts, as for one source); a source that holds only some classes (drinking
  cans and bottles) changes which photos teach a class, not how often the model expects it;
- within a class, the sources that hold it split its weight by their `share` (equal by default),
  each source's photos equally;
- validation (early stopping, temperature, `uncertain` threshold) weighs every source alike.

With one train source every weight is exactly what it always was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.data import Dataset


def class_weights(y: np.ndarray, classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights (mean 1 over the samples): `balanced` is n/(k*n_c), `sqrt` its
    square root, a gentler push for the rare `trash` class."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    if mode == "none":
        return np.ones(classes)
    w = counts.sum() / (classes * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return w / np.sum(w * counts) * counts.sum()


def sample_weights(
    y: np.ndarray,
    sources: Sequence[str],
    *,
    classes: int,
    mode: str,
    shares: Mapping[str, float] | None = None,
) -> np.ndarray:
    """One loss weight per training sample (mean 1).

    Args:
        y: class indices.
        sources: each sample's source name.
        classes: how many classes there are.
        mode: `train.class_weights` (`none`, `balanced`, `sqrt`).
        shares: source -> its share of a class it holds (default 1 each).
    """
    y = np.asarray(y)
    names = np.asarray(sources)
    present = list(dict.fromkeys(sources))
    if len(present) <= 1:
        return class_weights(y, classes, mode)[y]
    held = {s: set(np.unique(y[names == s]).tolist()) for s in present}
    complete = [s for s in present if len(held[s]) == classes] or present
    base = np.isin(names, complete)
    prior = np.bincount(
        y[base], weights=class_weights(y[base], classes, mode)[y[base]], minlength=classes
    )
    prior = prior / prior.sum()
    shares = shares or {}
    out = np.zeros(len(y), dtype=np.float64)
    for c in range(classes):
        holders = [s for s in present if c in held[s]]
        total = sum(shares.get(s, 1.0) for s in holders)
        for s in holders:
            mask = (y == c) & (names == s)
            out[mask] = prior[c] * shares.get(s, 1.0) / total / mask.sum()
    return out / out.mean()


def balanced(sources: Sequence[str]) -> np.ndarray | None:
    """Weights that make every source count alike (mean 1); None for one source, where plain
    unweighted figures are the same thing."""
    present = list(dict.fromkeys(sources))
    if len(present) <= 1:
        return None
    names = np.asarray(sources)
    counts = {s: int((names == s).sum()) for s in present}
    w = np.array([1.0 / counts[s] for s in sources])
    return w / w.mean()


def weights_for(ds: Dataset, mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(training sample weights, validation weights) for a dataset; None where one source
    makes them the plain ones (class weights over the labels, unweighted validation)."""
    sources = ds.sources_of("train")
    if len(set(sources)) <= 1:
        return None, None
    y = ds.targets("train")
    train = sample_weights(y, sources, classes=len(ds.labels), mode=mode, shares=ds.shares)
    return train, balanced(ds.sources_of("val"))
