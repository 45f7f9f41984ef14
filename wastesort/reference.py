"""The reference file: what a version saw on validation, for drift reports to compare with.

Pure numpy (no TensorFlow, no pickle). Training builds it (`build`) from the validation images'
embeddings, scores and image statistics; publish stores it as the entry's `reference`
artifact; `Classifier` loads it to give each `Prediction` its projected `embedding` and
`image_stats`. The format is an `.npz` (numpy's zip of `.npy` arrays, read with
`allow_pickle=False`); see docs/core.md ("The reference file").
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from wastesort.errors import ModelError

FORMAT = 1
DIMS = 32
MAX_ITEMS = 2000
CONFIDENCE_BINS = 20
STATS = ("brightness", "contrast", "colourfulness", "blur")
"""Per image, on the model input (uint8 H x W x 3): mean and standard deviation of luma (0..1),
Hasler-Suesstrunk colourfulness (0..1 scale), and the variance of the luma's 4-neighbour
Laplacian (in 0..255 units; low means blurry)."""


def _luma(arrays: np.ndarray) -> np.ndarray:
    rgb = arrays.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def image_stats_batch(arrays: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> (N, len(STATS)) float32, in `STATS` order."""
    arrays = np.asarray(arrays)
    if arrays.ndim == 3:
        arrays = arrays[None]
    luma = _luma(arrays)
    rgb = arrays.astype(np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    colourfulness = np.sqrt(rg.std(axis=axes) ** 2 + yb.std(axis=axes) ** 2) + 0.3 * np.sqrt(
        rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2
    )
    lap = (
        luma[:, :-2, 1:-1]
        + luma[:, 2:, 1:-1]
        + luma[:, 1:-1, :-2]
        + luma[:, 1:-1, 2:]
        - 4 * luma[:, 1:-1, 1:-1]
    )
    stats = [
        luma.mean(axis=axes) / 255,
        luma.std(axis=axes) / 255,
        colourfulness / 255,
        lap.reshape(len(lap), -1).var(axis=1),
    ]
    return np.stack(stats, axis=1).astype(np.float32)


def image_stats(array: np.ndarray) -> dict[str, float]:
    """One uint8 image (H, W, 3) -> `{stat: value}`."""
    row = image_stats_batch(array)[0]
    return {name: round(float(v), 6) for name, v in zip(STATS, row, strict=True)}


@dataclass(frozen=True)
class Reference:
    """A version's validation statistics. Arrays as stored; see `build` for their meaning."""

    labels: list[str]
    mean: np.ndarray  # (D,) embedding mean
    components: np.ndarray  # (K, D) principal axes, K <= DIMS
    explained_variance: np.ndarray  # (K,)
    embeddings: np.ndarray  # (N, K) projected validation embeddings, N <= MAX_ITEMS
    predicted_mix: np.ndarray  # (L,) share of validation images predicted as each class
    true_mix: np.ndarray  # (L,) share of validation images labelled as each class
    confidence_edges: np.ndarray  # (B + 1,)
    confidence_hist: np.ndarray  # (B,) share of validation images per confidence bin
    image_stats: np.ndarray  # (N, len(STATS)), the same images as `embeddings`
    meta: dict[str, Any]

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw embeddings (N, D) -> their PCA projection (N, K)."""
        centred = np.asarray(embeddings, np.float32) - self.mean
        return centred @ self.components.T

    def describe(self, arrays: np.ndarray, embeddings: np.ndarray | None) -> list[dict[str, Any]]:
        """Per image, the `Prediction` extras: `image_stats`, and `embedding` (projected)
        when the raw embeddings are given."""
        rows: list[dict[str, Any]] = [
            {"image_stats": {n: round(float(v), 6) for n, v in zip(STATS, row, strict=True)}}
            for row in image_stats_batch(arrays)
        ]
        if embeddings is not None:
            for row, projected in zip(rows, self.project(embeddings), strict=True):
                row["embedding"] = [round(float(v), 5) for v in projected]
        return rows

    def dumps(self) -> bytes:
        meta = {**self.meta, "format": FORMAT, "labels": self.labels, "stats": list(STATS)}
        arrays = {
            "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8),
            "mean": self.mean,
            "components": self.components,
            "explained_variance": self.explained_variance,
            "embeddings": self.embeddings,
            "predicted_mix": self.predicted_mix,
            "true_mix": self.true_mix,
            "confidence_edges": self.confidence_edges,
            "confidence_hist": self.confidence_hist,
            "image_stats": self.image_stats,
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def loads(cls, data: bytes) -> Reference:
        """Parse reference bytes (already verified against the manifest's sha256).

        Raises:
            ModelError: not a reference file this release reads.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads(arrays.pop("meta").tobytes())
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"not a reference file: {exc}") from None
        found = meta.pop("format", None)
        if found != FORMAT:
            raise ModelError(f"reference format {found!r} is not {FORMAT} (upgrade wastesort)")
        labels = meta.pop("labels")
        meta.pop("stats", None)
        try:
            return cls(labels=labels, meta=meta, **arrays)
        except TypeError as exc:
            raise ModelError(f"reference file is incomplete: {exc}") from None


def build(
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    true_labels: np.ndarray,
    stats: np.ndarray,
    labels: list[str],
    *,
    dims: int = DIMS,
    max_items: int = MAX_ITEMS,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> Reference:
    """Build a reference from validation outputs.

    Args:
        embeddings: raw embeddings (N, D), from the model's `embedding` output.
        probabilities: calibrated scores (N, L), as served.
        true_labels: label indices (N,).
        stats: `image_stats_batch` of the same images (N, len(STATS)).
        labels: the class names (L).
        dims: PCA dimensions kept (fewer when D or N is smaller).
        max_items: at most this many images keep their projection and statistics (a seeded
            sample); the PCA, mixes and histogram use all N.
        seed: the sample's seed.
        meta: extra facts to record (version, dataset fingerprint, ...).
    """
    embeddings = np.asarray(embeddings, np.float64)
    probabilities = np.asarray(probabilities, np.float64)
    n, width = embeddings.shape
    mean = embeddings.mean(axis=0)
    _, singular, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    k = min(dims, width, n)
    components = vt[:k]
    # A deterministic sign: each axis points where its largest loading is positive.
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1, signs)[:, None]
    variance = singular[:k] ** 2 / max(n - 1, 1)
    keep = np.arange(n)
    if n > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_items, replace=False))
    projected = (embeddings[keep] - mean) @ components.T
    predicted = probabilities.argmax(axis=1)
    count = len(labels)
    edges = np.linspace(0, 1, CONFIDENCE_BINS + 1)
    hist, _ = np.histogram(probabilities.max(axis=1), bins=edges)
    return Reference(
        labels=list(labels),
        mean=mean.astype(np.float32),
        components=components.astype(np.float32),
        explained_variance=variance.astype(np.float32),
        embeddings=projected.astype(np.float32),
        predicted_mix=np.bincount(predicted, minlength=count) / n,
        true_mix=np.bincount(np.asarray(true_labels), minlength=count) / n,
        confidence_edges=edges,
        confidence_hist=hist / n,
        image_stats=np.asarray(stats, np.float32)[keep],
        meta={"count": n, **(meta or {})},
    )
