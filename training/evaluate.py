"""Evaluate models the way serving runs them: every TFLite variant through `wastesort.Classifier`.

Scores at temperature 1 give the validation logits (up to a per-row constant) that temperature
scaling is fit on (source-balanced when there are several train sources); the test split, the
eval sources and the photos of none of the classes are then scored with the fitted temperature,
and `source_tables` turns them into one per-source table per variant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training import calibrate, metrics, per_source
from training.config import InputConfig
from training.data import EVAL, UNMAPPED, Dataset, input_spec
from training.weights import balanced
from wastesort import Classifier
from wastesort.interpreter import EMBEDDING, LOGITS
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
    outputs: dict[str, dict] | None = None,
    temperature: float = 1.0,
    uncertain_threshold: float = 0.0,
) -> ModelEntry:
    """A manifest entry for a freshly converted model (not yet in any registry). `outputs`
    (every output by name, from `quantize.inspect`) names them in the entry when there are
    several: that entry is schema 2."""
    content = path.read_bytes()
    named = None
    if outputs and len(outputs) > 1:
        named = {name: _output_spec(name, spec) for name, spec in outputs.items()}
    return ModelEntry(
        version=version,
        artifact=ArtifactRef(
            path=path.name, sha256=hashlib.sha256(content).hexdigest(), size=len(content)
        ),
        labels=list(labels),
        input=input_spec,
        output=_output_spec(LOGITS, output),
        outputs=named,
        temperature=temperature,
        uncertain_threshold=uncertain_threshold,
    )


def _output_spec(name: str, output: dict) -> OutputSpec:
    return OutputSpec(
        kind="embedding" if name == EMBEDDING else "logits",
        dtype=output["dtype"],
        scale=output["scale"],
        zero_point=output["zero_point"],
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
    val_weights: np.ndarray | None = None
    """Source-balanced validation weights (None: one source, every photo alike)."""
    extra_images: list[bytes] = field(default_factory=list)
    """The eval sources' photos, then the photos of none of the classes (`extra` in the data)."""

    @classmethod
    def of(cls, ds: Dataset) -> Splits:
        return cls(
            labels=ds.labels,
            val_images=[ds.read(i) for i in ds.indices("val")],
            test_images=[ds.read(i) for i in ds.indices("test")],
            test_names=[ds.name(i) for i in ds.indices("test")],
            y_val=ds.targets("val"),
            y_test=ds.targets("test"),
            val_weights=balanced(ds.sources_of("val")),
            extra_images=[ds.read(i) for i in extra(ds)],
        )


def extra(ds: Dataset) -> list[int]:
    """Indices of what is scored besides the test split: eval sources, then `unmapped`."""
    return ds.indices(EVAL) + ds.indices(UNMAPPED)


def keras_logits(model: Any, pixels: np.ndarray, ds: Dataset) -> tuple[np.ndarray, ...]:
    """The float model's own logits on validation, test and the extra photos, run in Keras: the
    reference every converted variant is held to."""
    parts = (ds.indices("val"), ds.indices("test"), extra(ds))
    return tuple(
        model.predict(pixels[idx].astype(np.float32), batch_size=32, verbose=0)
        if idx
        else np.zeros((0, len(ds.labels)), np.float32)
        for idx in parts
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
    extra_probs: np.ndarray | None
    """Calibrated scores of `Splits.extra_images` (None: there are none)."""


@dataclass
class VariantScores(Scores):
    """A TFLite variant, scored through `wastesort.Classifier`, with what publishing needs."""

    val_probs: np.ndarray
    """Calibrated validation scores: the uncertain threshold is fit on them."""
    entry: ModelEntry
    spec: InputSpec


def score_keras(logits: tuple[np.ndarray, ...], splits: Splits, *, bins: int) -> Scores:
    """The float model's own logits (run in Keras; validation, test, extra): the reference the
    variants are held to."""
    val_logits, test_logits, extra_logits = logits
    temperature = calibrate.fit_temperature(val_logits, splits.y_val, splits.val_weights)
    probs = softmax(test_logits, temperature)
    return Scores(
        temperature=temperature,
        test_probs=probs,
        test=metrics.summarize(probs, splits.y_test, splits.labels, bins=bins),
        test_raw=metrics.summarize(softmax(test_logits), splits.y_test, splits.labels),
        extra_probs=softmax(extra_logits, temperature),
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
            outputs=variant.outputs,
        )
        clf = classifier(entry, variant.path, num_threads=num_threads)
        val_probs = score_files(clf, splits.val_images)
        temperature = calibrate.fit_temperature(
            calibrate.log_probs(val_probs), splits.y_val, splits.val_weights
        )
        clf.entry = clf.entry.model_copy(update={"temperature": temperature})
        test_probs = score_files(clf, splits.test_images)
        extra_probs = score_files(clf, splits.extra_images) if splits.extra_images else None
        raw = softmax(calibrate.log_probs(test_probs) * temperature)
        scored[mode] = VariantScores(
            temperature=temperature,
            test_probs=test_probs,
            test=metrics.summarize(test_probs, splits.y_test, splits.labels, bins=bins),
            test_raw=metrics.summarize(raw, splits.y_test, splits.labels),
            val_probs=softmax(calibrate.log_probs(val_probs), temperature),
            entry=entry,
            spec=spec,
            extra_probs=extra_probs,
        )
    return scored


def photo_sets(ds: Dataset) -> list[tuple[str, str, list[int]]]:
    """(name, kind, dataset indices) of every photo set a run reports on: each train source's
    test split, each eval source, and each source's photos of none of the classes."""
    sets = []
    for name, role in ds.roles.items():
        part, kind = ("test", per_source.HELD_OUT) if role == "train" else (EVAL, per_source.EVAL)
        sets.append((name, kind, [i for i in ds.indices(part) if ds.items[i].source == name]))
    for name in ds.roles:
        idx = [i for i in ds.indices(UNMAPPED) if ds.items[i].source == name]
        sets.append((f"{name}/unmapped", per_source.UNMAPPED, idx))
    return [s for s in sets if s[2]]


def source_tables(
    ds: Dataset, scores: dict[str, Scores], threshold: float
) -> dict[str, dict[str, dict]]:
    """One per-source table per variant (`per_source.table`), every variant at the published
    `uncertain` threshold (the int8 model's) with its own temperature."""
    order = ds.indices("test") + extra(ds)
    where = {i: k for k, i in enumerate(order)}
    tables = {}
    for variant, s in scores.items():
        probs = (
            s.test_probs if s.extra_probs is None else np.concatenate([s.test_probs, s.extra_probs])
        )
        sets = [
            per_source.scored_from_probs(
                name,
                kind,
                [ds.items[i].label for i in idx],
                probs[[where[i] for i in idx]],
                labels=ds.labels,
                threshold=threshold,
            )
            for name, kind, idx in photo_sets(ds)
        ]
        tables[variant] = per_source.table(sets)
    return tables
