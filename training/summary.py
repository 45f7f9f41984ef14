"""The run's figures, assembled once: `summary.json`, the MLflow metrics and the manifest's
`metrics` all come from here, so the report, the tracking server and the registry agree."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from training.evaluate import Scores, agreement

if TYPE_CHECKING:
    from training.config import GateConfig
    from training.data import Dataset
    from training.quantize import GateResult, Variant  # imports TensorFlow

TRACKED_UNCERTAIN = ("threshold", "test_coverage", "test_accuracy_decided")
TRACKED_PER_SOURCE = ("accuracy", "macro_f1", "decided", "confidently_wrong", "uncertain")


def _metric_name(*parts: str) -> str:
    """MLflow takes letters, digits and `_-./ ` in metric names."""
    return ".".join(re.sub(r"[^\w\-/ ]", "_", p) for p in parts)


def by_source(tables: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Every variant's per-source figures, as MLflow metrics (`source.<variant>.<set>.<key>`)."""
    return {
        _metric_name("source", variant, name, key): row[key]
        for variant, rows in tables.items()
        for name, row in rows.items()
        for key in TRACKED_PER_SOURCE
        if row.get(key) is not None
    }


def champion_metrics(comparison: dict[str, Any]) -> dict[str, float]:
    """Both models' figures on the compared photo sets (`champion.<role>.<set>.<key>`)."""
    return {
        _metric_name("champion", role, name, key): row[key]
        for role in ("champion", "challenger")
        if comparison.get(role)
        for name, row in comparison[role]["table"].items()
        for key in TRACKED_PER_SOURCE
        if row.get(key) is not None
    }


def champion_tags(comparison: dict[str, Any]) -> dict[str, Any]:
    verdict = comparison["verdict"]
    return {
        "verdict": "passed" if verdict["passed"] else "failed",
        "verdict_reasons": "; ".join(verdict["reasons"])[:5000],
        "verdict_forced": verdict.get("forced"),
        "champion_version": (comparison.get("champion") or {}).get("version"),
    }


def brief(m: dict[str, Any]) -> dict[str, Any]:
    """The headline of `metrics.summarize`, rounded for people to read."""
    return {
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "ece": round(m["ece"], 4),
        "per_class_recall": {k: round(v["recall"], 4) for k, v in m["per_class"].items()},
    }


def test_section(
    scores: dict[str, Scores], float_logits: np.ndarray, variants: dict[str, Variant]
) -> dict[str, dict[str, Any]]:
    """One row per model (the Keras float model first): the model card's test table."""
    return {
        name: {
            **brief(s.test),
            "ece_uncalibrated": round(s.test_raw["ece"], 4),
            "temperature": s.temperature,
            "agreement_with_float": round(agreement(s.test_probs, float_logits), 4),
            "size_bytes": variants[name].size if name in variants else None,
        }
        for name, s in scores.items()
    }


def tracked(
    scores: dict[str, Scores], test: dict[str, dict[str, Any]], uncertain: dict[str, Any]
) -> dict[str, float]:
    """The figures MLflow compares runs by: test metrics (unrounded, but agreement as
    reported) and what the uncertain threshold does on test."""
    out: dict[str, float] = {}
    for name, s in scores.items():
        out |= {
            f"test.{name}.accuracy": s.test["accuracy"],
            f"test.{name}.macro_f1": s.test["macro_f1"],
            f"test.{name}.ece": s.test["ece"],
            f"test.{name}.agreement_with_float": test[name]["agreement_with_float"],
        }
    return out | {f"uncertain.{k}": uncertain[k] for k in TRACKED_UNCERTAIN}


def gate_section(gate: GateResult, cfg: GateConfig) -> dict[str, Any]:
    return {
        "passed": gate.passed,
        "message": gate.message(),
        "max_accuracy_drop": cfg.max_accuracy_drop,
        "min_agreement": cfg.min_agreement,
    }


def variants_section(variants: dict[str, Variant], edgetpu: str) -> dict[str, dict[str, Any]]:
    """Size and tensor specs of every converted file; `edgetpu` says what became of the Edge
    TPU compile."""
    info: dict[str, dict[str, Any]] = {}
    for mode, v in variants.items():
        info[mode] = {"size_bytes": v.size, "input": v.input, "output": v.output}
        if mode == "int8":
            info[mode] |= {"integer_only": v.integer_only, "float_ops": v.float_ops}
    info["int8"]["edgetpu"] = edgetpu
    return info


def manifest_metrics(
    summary: dict[str, Any], *, gate: GateResult, integer_only: bool | None, test_images: int
) -> dict[str, Any]:
    """The manifest entry's `metrics`: the served artifact's figures, headline first, where
    registry listings look; then its per-source table and the comparison with the champion."""
    test = summary["test"]
    return {
        "split": "test",
        "test_images": test_images,
        "accuracy": test["int8"]["accuracy"],
        "macro_f1": test["int8"]["macro_f1"],
        "int8": test["int8"],
        "float": test["keras"],
        "agreement_int8_float": round(gate.agreement, 4),
        "uncertain": {k: v for k, v in summary["uncertain"].items() if k != "tradeoff_val"},
        "integer_only": integer_only,
        "gate": summary["gate"],
        "per_source": summary["per_source"].get("int8", {}),
        "champion": summary["champion"],
    }


def build(
    *,
    version: str,
    ds: Dataset,
    commit: str | None,
    test: dict[str, dict[str, Any]],
    gate: GateResult,
    gate_cfg: GateConfig,
    uncertain: dict[str, Any],
    variants: dict[str, Variant],
    edgetpu: str,
    hardest: list[dict[str, Any]],
    timings: dict[str, float],
    per_source: dict[str, dict[str, dict]],
    champion: dict[str, Any],
) -> dict[str, Any]:
    """`summary.json` as it stands before MLflow registration (the pipeline adds `mlflow` and
    `published` later); `manifest_metrics` is what the registry entry will carry."""
    summary: dict[str, Any] = {
        "version": version,
        "dataset_fingerprint": ds.fingerprint,
        "git_commit": commit,
        "data": ds.report,
        "test": test,
        "gate": gate_section(gate, gate_cfg),
        "uncertain": uncertain,
        "variants": variants_section(variants, edgetpu),
        "hardest_mistakes": hardest,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "per_source": per_source,
        "champion": champion,
    }
    summary["manifest_metrics"] = manifest_metrics(
        summary,
        gate=gate,
        integer_only=variants["int8"].integer_only,
        test_images=len(ds.indices("test")),
    )
    return summary
