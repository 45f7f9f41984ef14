"""Per-source tables: how a model does on each photo set, decisions included. Pure, no I/O.

A model that is right on TrashNet's studio photos can be wrong on a floor, and confidently so;
one number over the union hides that. So every model is scored per source: accuracy, macro-F1
(over the classes the source holds), the share it decides (not `uncertain`), the accuracy of what
it decides, the share decided and wrong (the mistakes a bin acts on), recall per class; and on
photos of none of the classes, the share it answers `uncertain` (all of them, ideally).

Rows are named by source; `field` pools the eval sources (the field check), `union` pools every
scored photo of the classes (held-out parts of the train sources and the eval sources).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wastesort.scoring import is_confident

HELD_OUT, EVAL, UNMAPPED, GOLDEN = "held_out", "eval", "unmapped", "golden"
"""Kinds of photo set: a train source's test split, an eval source, photos of none of the
classes, a version's golden set."""
SOURCE_KINDS = (HELD_OUT, EVAL)
FIELD, UNION = "field", "union"


@dataclass(frozen=True)
class Scored:
    """One photo set as one model answered it."""

    name: str
    kind: str
    truth: Sequence[str]
    """The true class of each photo (for `unmapped`: what it is)."""
    predicted: Sequence[str]
    confidence: np.ndarray
    threshold: float
    """The model's `uncertain` threshold: below it, the answer is `uncertain`."""

    def decided(self) -> np.ndarray:
        return is_confident(np.asarray(self.confidence), self.threshold)


def _macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean F1 over the classes the photos hold; a prediction of any other class is a miss."""
    scores = []
    for c in sorted(set(truth.tolist())):
        tp = float(np.sum((truth == c) & (predicted == c)))
        fp = float(np.sum((truth != c) & (predicted == c)))
        fn = float(np.sum((truth == c) & (predicted != c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def row(s: Scored) -> dict:
    """The figures of one scored photo set (see the module docstring)."""
    truth, predicted = np.asarray(s.truth, dtype=object), np.asarray(s.predicted, dtype=object)
    decided = s.decided()
    n = len(truth)
    if s.kind == UNMAPPED:
        answered = Counter(p for p, d in zip(predicted, decided, strict=True) if d)
        return {
            "kind": s.kind,
            "n": n,
            "uncertain": round(float(1 - decided.mean()), 4) if n else None,
            "decided_as": dict(answered.most_common()),
        }
    if n == 0:
        return {"kind": s.kind, "n": 0}
    correct = truth == predicted
    return {
        "kind": s.kind,
        "n": n,
        "accuracy": round(float(correct.mean()), 4),
        "macro_f1": round(_macro_f1(truth, predicted), 4),
        "decided": round(float(decided.mean()), 4),
        "accuracy_decided": round(float(correct[decided].mean()), 4) if decided.any() else None,
        "confidently_wrong": round(float((decided & ~correct).mean()), 4),
        "recall": {
            c: round(float(correct[truth == c].mean()), 4) for c in sorted(set(truth.tolist()))
        },
    }


def pooled(name: str, kind: str, sets: Sequence[Scored]) -> Scored | None:
    """Several photo sets as one (for `field` and `union`); None when there are none."""
    if not sets:
        return None
    return Scored(
        name=name,
        kind=kind,
        truth=[t for s in sets for t in s.truth],
        predicted=[p for s in sets for p in s.predicted],
        confidence=np.concatenate([np.asarray(s.confidence, dtype=np.float64) for s in sets]),
        threshold=sets[0].threshold,
    )


def table(sets: Sequence[Scored]) -> dict[str, dict]:
    """Rows by name: every photo set, then `field` (the eval sources) and `union` (every
    scored photo of the classes)."""
    rows = {s.name: row(s) for s in sets}
    for name, kinds in ((FIELD, (EVAL,)), (UNION, SOURCE_KINDS)):
        together = pooled(name, name, [s for s in sets if s.kind in kinds])
        if together is not None:
            rows[name] = row(together)
    return rows


def scored_from_probs(
    name: str,
    kind: str,
    truth: Sequence[str],
    probs: np.ndarray,
    *,
    labels: Sequence[str],
    threshold: float,
) -> Scored:
    """A photo set from calibrated probabilities (N, classes) in `labels` order."""
    probs = np.asarray(probs).reshape(len(truth), len(labels))
    top = probs.argmax(axis=1)
    return Scored(
        name=name,
        kind=kind,
        truth=list(truth),
        predicted=[labels[int(i)] for i in top],
        confidence=probs[np.arange(len(top)), top],
        threshold=threshold,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(rows: dict[str, dict], labels: Sequence[str]) -> list[str]:
    """Markdown lines: one table for the photo sets of the classes, one line per `unmapped`."""
    lines = [
        "| source | kind | photos | accuracy | macro-F1 | decided | accuracy of decided "
        "| confidently wrong | " + " | ".join(f"recall {c}" for c in labels) + " |",
        "| --- " * (8 + len(labels)) + "|",
    ]
    for name, r in rows.items():
        if r["kind"] == UNMAPPED or not r["n"]:
            continue
        recalls = " | ".join(f"{r['recall'][c]:.2f}" if c in r["recall"] else "-" for c in labels)
        lines.append(
            f"| {name} | {r['kind']} | {r['n']} | {_pct(r['accuracy'])} | {r['macro_f1']:.3f} | "
            f"{_pct(r['decided'])} | {_pct(r['accuracy_decided'])} | "
            f"{_pct(r['confidently_wrong'])} | {recalls} |"
        )
    for name, r in rows.items():
        if r["kind"] == UNMAPPED and r["n"]:
            answered = ", ".join(f"{c} {k}" for c, k in r["decided_as"].items()) or "none"
            lines.append(
                f"\n{name} ({r['n']} photos of none of the classes): {_pct(r['uncertain'])} "
                f"answered `uncertain`; decided as: {answered}."
            )
    return lines
