"""Evaluate models the way serving runs them: every TFLite variant through `wastesort.Classifier`.

Scores at temperature 1 give the validation logits (up to a per-row constant) that temperature
scaling is fit on; the test split is then scored with the fitted temperature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training import calibrate, metrics
from training.config import InputConfig
from training.data import Dataset, input_spec
from wastesort import Classifier
from wastesort.manifest import ArtifactRef, InputSpec, ModelEntry, OutputSpec
from wastesort.scoring import softmax

if TYPE_CHECKING:
    from training.quantize import Variant  # imports TensorFlow


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


@dataclass(frozen=True)
class Splits:
    """What every model is scored on: validation (to fit calibration) and test (to report)."""

    labels: list[str]
    val_images: list[bytes]
    test_images: list[bytes]
    test_names: list[str]
    y_val: np.ndarray
    y_test: np.ndarray

    @classmethod
    def of(cls, ds: Dataset) -> Splits:
        return cls(
            labels=ds.labels,
            val_images=[ds.read(i) for i in ds.indices("val")],
            test_images=[ds.read(i) for i in ds.indices("test")],
            test_names=[ds.items[i].path for i in ds.indices("test")],
            y_val=ds.targets("val"),
            y_test=ds.targets("test"),
        )


def keras_logits(model: Any, pixels: np.ndarray, ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The float model's own logits on validation and test, run in Keras: the reference every
    converted variant is held to."""
    val, test = (pixels[ds.indices(s)].astype(np.float32) for s in ("val", "test"))
    return (
        model.predict(val, batch_size=32, verbose=0),
        model.predict(test, batch_size=32, verbose=0),
    )


@dataclass
class Scores:
    """One model on the test split, calibrated with the temperature fit on validation."""

    temperature: float
    test_probs: np.ndarray
    test: dict[str, Any]
    """`metrics.summarize` of the calibrated scores."""
    test_raw: dict[str, Any]
    """The same at temperature 1: how much calibration changed."""


@dataclass
class VariantScores(Scores):
    """A TFLite variant, scored through `wastesort.Classifier`, with what publishing needs."""

    val_probs: np.ndarray
    """Calibrated validation scores: the uncertain threshold is fit on them."""
    entry: ModelEntry
    spec: InputSpec


def score_keras(
    val_logits: np.ndarray, test_logits: np.ndarray, splits: Splits, *, bins: int
) -> Scores:
    """The float model's own logits (run in Keras): the reference the variants are held to."""
    temperature = calibrate.fit_temperature(val_logits, splits.y_val)
    probs = softmax(test_logits, temperature)
    return Scores(
        temperature=temperature,
        test_probs=probs,
        test=metrics.summarize(probs, splits.y_test, splits.labels, bins=bins),
        test_raw=metrics.summarize(softmax(test_logits), splits.y_test, splits.labels),
    )


def score_variants(
    variants: dict[str, Variant],
    splits: Splits,
    input_cfg: InputConfig,
    *,
    bins: int,
    num_threads: int | None = None,
) -> dict[str, VariantScores]:
    """Every converted model, scored the way serving runs it: validation at temperature 1 to
    fit the temperature, then test with it."""
    scored = {}
    for mode, variant in variants.items():
        spec = input_spec(input_cfg, dtype=variant.input["dtype"]).model_copy(
            update={"scale": variant.input["scale"], "zero_point": variant.input["zero_point"]}
        )
        entry = entry_for(
            variant.path,
            version=f"eval-{mode}",
            labels=splits.labels,
            input_spec=spec,
            output=variant.output,
        )
        clf = classifier(entry, variant.path, num_threads=num_threads)
        val_probs = score_files(clf, splits.val_images)
        temperature = calibrate.fit_temperature(calibrate.log_probs(val_probs), splits.y_val)
        clf.entry = clf.entry.model_copy(update={"temperature": temperature})
        test_probs = score_files(clf, splits.test_images)
        raw = softmax(calibrate.log_probs(test_probs) * temperature)
        scored[mode] = VariantScores(
            temperature=temperature,
            test_probs=test_probs,
            test=metrics.summarize(test_probs, splits.y_test, splits.labels, bins=bins),
            test_raw=metrics.summarize(raw, splits.y_test, splits.labels),
            val_probs=softmax(calibrate.log_probs(val_probs), temperature),
            entry=entry,
            spec=spec,
        )
    return scored
