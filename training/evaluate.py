"""Evaluate models the way serving runs them: every TFLite variant through `wastesort.Classifier`.

Scores at temperature 1 give the validation logits (up to a per-row constant) that temperature
scaling is fit on; the test split is then scored with the fitted temperature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wastesort import Classifier
from wastesort.manifest import ArtifactRef, InputSpec, ModelEntry, OutputSpec


def entry_for(
    path: Path,
    *,
    version: str,
    labels: Sequence[str],
    input_spec: InputSpec,
    output: dict,
    temperature: float = 1.0,
    uncertain_threshold: float = 0.0,
) -> ModelEntry:
    """A manifest entry for a freshly converted model (not yet in any registry)."""
    content = path.read_bytes()
    return ModelEntry(
        version=version,
        artifact=ArtifactRef(
            path=path.name, sha256=hashlib.sha256(content).hexdigest(), size=len(content)
        ),
        labels=list(labels),
        input=input_spec,
        output=OutputSpec(
            kind="logits",
            dtype=output["dtype"],
            scale=output["scale"],
            zero_point=output["zero_point"],
        ),
        temperature=temperature,
        uncertain_threshold=uncertain_threshold,
    )


def classifier(entry: ModelEntry, path: Path, *, num_threads: int | None = None) -> Classifier:
    return Classifier(path.read_bytes(), entry, num_threads=num_threads)


def score_files(clf: Classifier, images: Sequence[bytes], batch: int = 64) -> np.ndarray:
    """Calibrated probabilities (N, classes) for encoded images, via the serving code path:
    `Classifier.preprocess` (wastesort's preprocessing) then `scores_from_arrays`."""
    out = []
    for start in range(0, len(images), batch):
        arrays = np.stack([clf.preprocess(b) for b in images[start : start + batch]])
        out.append(clf.scores_from_arrays(arrays))
    return np.concatenate(out)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())
