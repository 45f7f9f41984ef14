"""Publish the int8 model to the registry, with its manifest entry and golden set.

A run publishes a challenger (`registry.aliases`, `candidate` by default) when the quantization
gate passes and it beats the champion by the config's rule, or when that verdict is forced with
a reason (recorded in the entry's `metrics.champion.verdict.forced`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.compare import VerdictError
from training.quantize import GateError, GateResult
from wastesort.errors import RegistryError
from wastesort.manifest import InputSpec, ModelEntry, OutputSpec
from wastesort.registry import GoldenSample, Registry, sha256_file
from wastesort.scoring import is_confident, ranked

if TYPE_CHECKING:
    from training.config import Config
    from training.data import Dataset
    from training.evaluate import Splits, VariantScores

log = logging.getLogger(__name__)


def version_id(sha256: str) -> str:
    """`v<date>-<first 8 of the int8 file's sha256>`: the same bytes republished the same day
    keep their id, which `publish` relies on to skip the upload."""
    return f"v{datetime.now(UTC):%Y%m%d}-{sha256[:8]}"


def pick_golden(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    per_class: int,
    threshold: float,
    margin: float = 0.1,
) -> list[int]:
    """Indices of test images the model gets right with a clear margin, `per_class` per class.

    A golden image must come out the same on every runtime (x86, ARM, Edge TPU), so the ones
    near the decision boundary or the uncertain threshold are left out.
    """
    pred = probs.argmax(axis=1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    chosen: list[int] = []
    for c in range(probs.shape[1]):
        right = np.flatnonzero((y_true == c) & (pred == c))
        clear = right[is_confident(probs[right, c], threshold + margin)]
        ok = clear if len(clear) >= per_class else right  # a weak model: its best effort
        ok = ok[np.argsort(-gap[ok], kind="stable")]
        # Not only the easiest: spread over the confident ones.
        step = max(1, len(ok) // max(per_class, 1))
        chosen.extend(int(i) for i in ok[::step][:per_class])
    return chosen


def golden_samples(
    indices: Sequence[int],
    *,
    names: Sequence[str],
    images: Sequence[bytes],
    probs: np.ndarray,
    y_true: np.ndarray,
    labels: Sequence[str],
) -> list[GoldenSample]:
    return [
        GoldenSample(
            name=Path(names[i]).name,
            data=images[i],
            expected_class=labels[int(y_true[i])],
            scores=ranked(probs[i], labels),
        )
        for i in indices
    ]


def golden_set(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    names: Sequence[str],
    images: Sequence[bytes],
    labels: Sequence[str],
    per_class: int,
    threshold: float,
) -> list[GoldenSample]:
    """`pick_golden` then `golden_samples`: the images a device checks a new model against."""
    indices = pick_golden(probs, y_true, per_class=per_class, threshold=threshold)
    return golden_samples(
        indices, names=names, images=images, probs=probs, y_true=y_true, labels=labels
    )


def golden_for_run(
    ds: Dataset, int8: VariantScores, splits: Splits, *, per_class: int, threshold: float
) -> list[GoldenSample]:
    """The golden set of a run: from the test photos of the first train source only (TrashNet
    in the shipped configs), so a published model never carries photos of a set whose licence
    has not been cleared for redistribution (docs/data.md)."""
    first = next(name for name, role in ds.roles.items() if role == "train")
    keep = [k for k, i in enumerate(ds.indices("test")) if ds.items[i].source == first]
    return golden_set(
        int8.test_probs[keep],
        splits.y_test[keep],
        names=[splits.test_names[k] for k in keep],
        images=[splits.test_images[k] for k in keep],
        labels=splits.labels,
        per_class=per_class,
        threshold=threshold,
    )


def publish(
    uri: str,
    model_path: Path,
    *,
    version: str,
    gate: GateResult,
    labels: Sequence[str],
    input_spec: InputSpec,
    output: OutputSpec,
    outputs: dict[str, OutputSpec] | None = None,
    reference: Path | None = None,
    metrics: dict[str, Any],
    temperature: float,
    uncertain_threshold: float,
    dataset_fingerprint: str,
    mlflow_run_id: str | None,
    source_config: dict[str, Any],
    golden: Sequence[GoldenSample],
    aliases: Sequence[str],
    extra_files: dict[str, Path] | None = None,
    signing_key: Path | None = None,
    note: str | None = None,
) -> ModelEntry:
    """Publish to the registry at `uri`, unless the quantization gate failed.

    A rerun that makes the same bytes (same version id) finds its model already published:
    nothing is uploaded again and the aliases are moved to it (with `note` in their history).
    Named `outputs` or a `reference` file make the entry schema 2 (and so the registry's
    manifest: readers older than schema 2 then refuse it; see docs/ops.md).

    Raises:
        GateError: the int8 model lost too much against the float model.
    """
    if not gate.passed:
        raise GateError(f"refusing to publish {version} to {uri}: {gate.message()}")
    registry = Registry.from_uri(uri)
    try:
        existing = registry.manifest().versions.get(version)
    except RegistryError:  # no registry yet
        existing = None
    if existing is not None and existing.artifact.sha256 == sha256_file(model_path):
        log.info("%s is already published in %s (the same bytes); moving aliases", version, uri)
        for alias in aliases:
            reason = "publish (already published)" + (f"; {note}" if note else "")
            registry.promote(alias, version, reason=reason)
        return existing
    return registry.publish(
        model_path,
        version=version,
        golden=golden,
        extra_files=extra_files,
        aliases=aliases,
        labels=list(labels),
        input=input_spec,
        output=output,
        outputs=outputs,
        reference=reference,
        metrics=metrics,
        temperature=temperature,
        uncertain_threshold=uncertain_threshold,
        dataset_fingerprint=dataset_fingerprint,
        mlflow_run_id=mlflow_run_id,
        source_config=source_config,
        signing_key=signing_key,
    )


def publish_run(
    cfg: Config,
    model_path: Path,
    *,
    version: str,
    gate: GateResult,
    verdict: dict[str, Any],
    int8: VariantScores,
    golden: Sequence[GoldenSample],
    labels: Sequence[str],
    summary: dict[str, Any],
    mlflow_run_id: str | None,
    edgetpu: Path | None = None,
    reference: Path | None = None,
) -> ModelEntry:
    """`publish` with what one pipeline run knows: its config, the int8 model's scores, its
    golden set (from the test split), the verdict against the champion, its summary and its
    reference file (`training.reference`).

    Raises:
        GateError: the int8 model lost too much against the float model.
        VerdictError: the challenger does not beat the champion, and nobody forced it.
    """
    if gate.passed and not verdict["passed"] and not verdict.get("forced"):
        raise VerdictError(
            f"refusing to publish {version} to {cfg.registry.uri}: it does not beat the "
            f"champion ({'; '.join(verdict['reasons'])}); champion.force='<reason>' publishes "
            "it anyway"
        )
    forced = verdict.get("forced")
    if forced:
        log.warning(
            "publishing %s although %s: forced (%s)", version, verdict["reasons"], verdict["forced"]
        )
    threshold = summary["uncertain"]["threshold"]
    return publish(
        cfg.registry.uri,
        model_path,
        version=version,
        gate=gate,
        labels=labels,
        input_spec=int8.spec,
        output=int8.entry.output,
        outputs=int8.entry.outputs,
        reference=reference,
        metrics=summary["manifest_metrics"],
        temperature=int8.temperature,
        uncertain_threshold=threshold,
        dataset_fingerprint=summary["dataset_fingerprint"],
        mlflow_run_id=mlflow_run_id,
        source_config=cfg.dump(),
        golden=golden,
        aliases=cfg.registry.aliases,
        extra_files={"edgetpu": edgetpu} if edgetpu else None,
        signing_key=cfg.registry.signing_key,
        note=f"verdict forced: {forced}" if forced else None,
    )
