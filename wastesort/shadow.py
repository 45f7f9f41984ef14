"""Shadow scoring: how a challenger would have decided on the photos the champion saw. Pure.

Both inputs are lists of `wastesort.bulk.to_record` dicts (one per photo, matched by `"path"`),
so the same report comes from scoring here and from two bulk results files made in the cloud.
Figures follow training's per-source tables: accuracy is the predicted class against the label,
a photo is *decided* unless its decision is `uncertain`, and *confidently wrong* is decided and
wrong (the mistakes a bin acts on). Disagreement between the two models on one photo is the
total-variation distance of their confidence vectors (0: the same answer, 1: nothing in common).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wastesort.scoring import UNCERTAIN

CHAMPION, CHALLENGER = "champion", "challenger"
ROLES = (CHAMPION, CHALLENGER)
WORST = 16
"""Photos listed (and put on the contact sheet) by largest disagreement."""


@dataclass(frozen=True)
class Pair:
    """One photo both models answered."""

    path: str
    champion: dict[str, Any]
    challenger: dict[str, Any]
    label: str | None = None

    @property
    def agree(self) -> bool:
        return self.champion["decision"] == self.challenger["decision"]

    @property
    def distance(self) -> float:
        """Total-variation distance of the two confidence vectors (a class one vector lacks,
        cut by `top_k`, counts as 0)."""
        a, b = self.champion["all_confidences"], self.challenger["all_confidences"]
        return 0.5 * sum(abs(a.get(c, 0.0) - b.get(c, 0.0)) for c in {*a, *b})


def pair(
    champion: Sequence[Mapping[str, Any]],
    challenger: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str] | None = None,
) -> tuple[list[Pair], dict[str, Any]]:
    """Match the two lists by path: (the photos both answered, sorted by path; the counts of
    what was left out: refused by either model, or present on one side only).

    Raises:
        ValueError: a path appears twice on one side (two results files that were mixed up).
    """
    sides = []
    for role, records in zip(ROLES, (champion, challenger), strict=True):
        by_path: dict[str, Mapping[str, Any]] = {}
        for record in records:
            if record["path"] in by_path:
                raise ValueError(f"{record['path']} appears twice in the {role}'s records")
            by_path[record["path"]] = record
        sides.append(by_path)
    old, new = sides
    common = sorted(old.keys() & new.keys())
    refused = {
        role: sum("error" in side[p] for p in common)
        for role, side in zip(ROLES, sides, strict=True)
    }
    pairs = [
        Pair(p, dict(old[p]), dict(new[p]), (labels or {}).get(p))
        for p in common
        if "error" not in old[p] and "error" not in new[p]
    ]
    left_out = {
        "refused": refused,
        "only_champion": len(old.keys() - new.keys()),
        "only_challenger": len(new.keys() - old.keys()),
    }
    return pairs, left_out


def _share(count: float, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _version(pairs: Sequence[Pair], role: str) -> str | None:
    versions = sorted({getattr(p, role).get("model_version", "?") for p in pairs})
    return ", ".join(versions) if versions else None


def _labelled(pairs: Sequence[Pair], role: str, classes: set[str]) -> dict[str, Any]:
    """Accuracy and confidently-wrong share on the photos labelled with a class; on photos
    labelled as none of the classes (`not_waste`), the share answered `uncertain`."""
    inside = [p for p in pairs if p.label in classes]
    outside = [p for p in pairs if p.label is not None and p.label not in classes]
    correct = [getattr(p, role)["predicted_class"] == p.label for p in inside]
    decided = [getattr(p, role)["decision"] != UNCERTAIN for p in inside]
    return {
        "n": len(inside),
        "accuracy": _share(sum(correct), len(inside)),
        "confidently_wrong": _share(
            sum(d and not c for c, d in zip(correct, decided, strict=True)), len(inside)
        ),
        "decided": _share(sum(decided), len(inside)),
        "none_of_the_classes": {
            "n": len(outside),
            "uncertain": _share(
                sum(getattr(p, role)["decision"] == UNCERTAIN for p in outside), len(outside)
            ),
        },
    }


def report(
    champion: Sequence[Mapping[str, Any]],
    challenger: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str] | None = None,
    *,
    worst: int = WORST,
) -> dict[str, Any]:
    """The shadow report (one JSON-ready dict) of two models' records on the same photos.

    Args:
        champion, challenger: `to_record` dicts; matched by `"path"`.
        labels: path -> the label a person gave it (any subset of the paths).
        worst: how many photos of largest disagreement to list.

    Returns:
        `n`, `agreement`, `matrix` (champion decision -> challenger decision -> count,
        `uncertain` included), per model its version, overall `decided` share and the share of
        photos decided as each class, the `labelled` figures, `left_out`, and `disagreements`.

    Raises:
        ValueError: a path appears twice on one side.
    """
    pairs, left_out = pair(champion, challenger, labels)
    classes = sorted(
        {c for p in pairs for r in (p.champion, p.challenger) for c in r["all_confidences"]}
    )
    decisions = [*classes, UNCERTAIN]
    n = len(pairs)
    counts = Counter((p.champion["decision"], p.challenger["decision"]) for p in pairs)
    models = {}
    for role in ROLES:
        made = Counter(getattr(p, role)["decision"] for p in pairs)
        models[role] = {
            "version": _version(pairs, role),
            "decided": _share(n - made[UNCERTAIN], n),
            "decided_as": {c: _share(made[c], n) for c in decisions},
            "labelled": _labelled(pairs, role, set(classes)),
        }
    ranked = sorted(pairs, key=lambda p: -p.distance)  # stable: ties stay in path order
    return {
        "n": n,
        "agreement": _share(sum(p.agree for p in pairs), n),
        "classes": classes,
        "matrix": {a: {b: counts[a, b] for b in decisions} for a in decisions},
        **models,
        "labelled": sum(p.label is not None for p in pairs),
        "left_out": left_out,
        "disagreements": [
            {
                "path": p.path,
                "label": p.label,
                "distance": round(p.distance, 4),
                **{
                    role: {
                        "decision": getattr(p, role)["decision"],
                        "predicted_class": getattr(p, role)["predicted_class"],
                        "confidence": getattr(p, role)["confidence"],
                    }
                    for role in ROLES
                },
            }
            for p in ranked[:worst]
            if p.distance > 0
        ],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(data: Mapping[str, Any]) -> list[str]:
    """The report as plain-text lines (the CLI's default output; training's comparison too)."""
    old, new = data[CHAMPION], data[CHALLENGER]
    lines = [
        f"shadow: champion {old['version']} vs challenger {new['version']} on {data['n']} photos"
        f" ({data['labelled']} labelled)",
        f"agreement: {_pct(data['agreement'])}",
    ]
    gone = data["left_out"]
    refused = sum(gone["refused"].values())
    if refused or gone["only_champion"] or gone["only_challenger"]:
        lines.append(
            f"left out: {gone['refused'][CHAMPION]} refused by the champion, "
            f"{gone['refused'][CHALLENGER]} by the challenger, {gone['only_champion']} scored by "
            f"the champion only, {gone['only_challenger']} by the challenger only"
        )
    decisions = list(data["matrix"])
    cell = max(len(d) for d in decisions) + 2
    lines += ["", "decisions: rows the champion's, columns the challenger's"]
    lines.append(" " * cell + "".join(d.rjust(cell) for d in decisions))
    for a in decisions:
        counts = "".join(str(data["matrix"][a][b]).rjust(cell) for b in decisions)
        lines.append(a.ljust(cell) + counts)
    width = len("confidently wrong") + 2
    lines += ["", f"{'decided as':<{width}}{'champion':>12}{'challenger':>12}"]
    for d in decisions:
        lines.append(
            f"{d:<{width}}{_pct(old['decided_as'][d]):>12}{_pct(new['decided_as'][d]):>12}"
        )
    a, b = old["labelled"], new["labelled"]
    if a["n"]:
        lines += ["", f"labelled photos of the classes: {a['n']}"]
        for key in ("accuracy", "decided", "confidently_wrong"):
            name = key.replace("_", " ")
            lines.append(f"{name:<{width}}{_pct(a[key]):>12}{_pct(b[key]):>12}")
    outside_a, outside_b = a["none_of_the_classes"], b["none_of_the_classes"]
    if outside_a["n"]:
        lines.append(
            f"labelled as none of the classes: {outside_a['n']}, answered uncertain "
            f"{_pct(outside_a['uncertain'])} -> {_pct(outside_b['uncertain'])}"
        )
    if data["disagreements"]:
        lines += ["", "largest disagreements (distance, champion -> challenger, label):"]
        for d in data["disagreements"]:
            lines.append(
                f"  {d['distance']:.3f}  {d[CHAMPION]['decision']} -> {d[CHALLENGER]['decision']}"
                f"  {d['label'] or '-'}  {d['path']}"
            )
    return lines
