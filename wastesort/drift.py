"""Drift reports: does a window of predictions still look like what the model version saw?

Pure functions over numpy arrays, no I/O: the CLI (`wastesort drift`), and later the drift
Lambda and the edge heartbeat, call `report` with a `Baseline` (from the version's reference
file, or built on the fly from a folder of photos) and a `Window` of predictions.

The verdict rule (docs/core.md, "Drift"), with `Thresholds`:
- a window (or baseline) under `min_window` records gets `insufficient` ("not enough data");
- a *significance* test (class mix, per-class scores, uncertain share, image statistics,
  embeddings) says `drift` when its p-value is below `alpha_drift`, `warn` below `alpha_warn`,
  and `ok` whenever its effect (total variation, KS distance, share difference) is under
  `min_effect`, however small the p-value (large windows make tiny, harmless shifts significant);
- a *magnitude* test (confidence PSI, expected accuracy, measured accuracy) says `drift` or
  `warn` when its value passes its drift or warn threshold, and `ok` unless that is also
  significant at `alpha_warn` (small windows make large values by chance);
- the report says `drift` when any test does, else `warn` when any test does, else `ok`.
Tests whose inputs the baseline lacks are `skipped` with the reason, and do not vote.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from wastesort import drift_stats as st
from wastesort.drift_window import Baseline, Window, measured_accuracy
from wastesort.reference import STATS

__all__ = ["Baseline", "Check", "Report", "Thresholds", "Window", "report"]

OK, WARN, DRIFT, SKIPPED, INSUFFICIENT = "ok", "warn", "drift", "skipped", "insufficient"
PSI_GROUPS = 5
"""The confidence histogram is regrouped into at most this many bins of the baseline's mass for
PSI, so that a window of a few dozen records does not make a large PSI by chance."""


@dataclass(frozen=True)
class Thresholds:
    """The knobs of the verdict rule (module docstring); the defaults suit hourly windows."""

    alpha_warn: float = 0.01
    alpha_drift: float = 0.001
    min_effect: float = 0.1
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    accuracy_warn: float = 0.05
    """A drop of the (expected or measured) accuracy, in absolute terms, below the baseline's."""
    accuracy_drift: float = 0.10
    min_window: int = 15
    permutations: int = 1000


@dataclass
class Check:
    """One test's outcome; `threshold` says what its statistic or p-value was held against."""

    verdict: str
    statistic: float | None = None
    p_value: float | None = None
    threshold: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    verdict: str
    n: int
    baseline_n: int
    baseline: str
    tests: dict[str, Check]
    expected_accuracy: dict[str, float | None]
    reason: str = ""
    thresholds: Thresholds = field(default_factory=Thresholds)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats rounded, `None`s kept."""
        return _rounded(asdict(self))


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def _significance(p: float, effect: float, limits: Thresholds) -> str:
    if effect < limits.min_effect:
        return OK
    return DRIFT if p < limits.alpha_drift else WARN if p < limits.alpha_warn else OK


def _magnitude(value: float, warn: float, drift: float, p: float, limits: Thresholds) -> str:
    if p >= limits.alpha_warn:
        return OK
    return DRIFT if value >= drift else WARN if value >= warn else OK


def _p_rule(limits: Thresholds) -> str:
    return (
        f"p < {limits.alpha_drift} drift, < {limits.alpha_warn} warn; effect >= {limits.min_effect}"
    )


def _class_mix(base: Baseline, window: Window, limits: Thresholds) -> Check:
    classes = len(base.labels)
    current = np.bincount(window.scores.argmax(axis=1), minlength=classes)
    statistic, p, dof = st.chi2_homogeneity(base.predicted_mix * base.count, current)
    tvd = float(np.abs(current / window.n - base.predicted_mix).sum() / 2)
    return Check(
        _significance(p, tvd, limits),
        statistic,
        p,
        _p_rule(limits),
        detail={
            "dof": dof,
            "total_variation": tvd,
            "baseline": dict(zip(base.labels, base.predicted_mix.tolist(), strict=True)),
            "current": dict(zip(base.labels, (current / window.n).tolist(), strict=True)),
        },
    )


def _class_scores(base: Baseline, window: Window, limits: Thresholds) -> Check:
    if base.scores is None:
        return Check(SKIPPED, reason="the baseline holds no per-image scores (a reference file)")
    per_class = {}
    for i, name in enumerate(base.labels):
        d, p = st.ks_2samp(base.scores[:, i], window.scores[:, i])
        per_class[name] = {"d": d, "p_value": min(1.0, p * len(base.labels))}
    worst = min(per_class, key=lambda c: (per_class[c]["p_value"], -per_class[c]["d"]))
    d, p = per_class[worst]["d"], per_class[worst]["p_value"]
    return Check(
        _significance(p, d, limits),
        d,
        p,
        _p_rule(limits) + " (Bonferroni over classes)",
        detail={"worst_class": worst, "per_class": per_class},
    )


def _confidence_psi(base: Baseline, window: Window, limits: Thresholds) -> Check:
    edges, hist = base.confidence_edges, base.confidence_hist
    cuts = [0]  # regroup the bins into <= PSI_GROUPS of roughly equal baseline mass
    cumulative = np.cumsum(hist)
    for g in range(1, PSI_GROUPS):
        cut = int(np.searchsorted(cumulative, g / PSI_GROUPS - 1e-9)) + 1
        if cuts[-1] < cut < len(hist):
            cuts.append(cut)
    cuts.append(len(hist))
    current, _ = np.histogram(window.scores.max(axis=1), bins=edges)
    base_counts = np.add.reduceat(hist * base.count, cuts[:-1]) + 0.5
    cur_counts = np.add.reduceat(current, cuts[:-1]) + 0.5
    value = st.psi(base_counts / base_counts.sum(), cur_counts / cur_counts.sum())
    scale = base.count * window.n / (base.count + window.n)
    p = st.chi2_sf(value * scale, len(cuts) - 2)
    return Check(
        _magnitude(value, limits.psi_warn, limits.psi_drift, p, limits),
        value,
        p,
        f">= {limits.psi_drift} drift, >= {limits.psi_warn} warn; p < {limits.alpha_warn}",
        detail={"bins": [float(edges[c]) for c in cuts]},
    )


def _uncertain(base: Baseline, window: Window, threshold: float, limits: Thresholds) -> Check:
    before = base.uncertain_share(threshold)
    hits = int((window.scores.max(axis=1) < threshold).sum())
    p = st.two_proportions(before * base.count, base.count, hits, window.n)
    now = hits / window.n
    return Check(
        _significance(p, abs(now - before), limits),
        now - before,
        p,
        _p_rule(limits),
        detail={"baseline": before, "current": now, "uncertain_threshold": threshold},
    )


def _image_stats(base: Baseline, window: Window, limits: Thresholds) -> Check:
    if base.image_stats is None or window.image_stats is None:
        return Check(SKIPPED, reason="image statistics are missing on one side")
    per_stat = {}
    for i, name in enumerate(STATS):
        d, p = st.ks_2samp(base.image_stats[:, i], window.image_stats[:, i])
        per_stat[name] = {
            "d": d,
            "p_value": min(1.0, p * len(STATS)),
            "baseline_median": float(np.median(base.image_stats[:, i])),
            "current_median": float(np.median(window.image_stats[:, i])),
        }
    worst = min(per_stat, key=lambda s: (per_stat[s]["p_value"], -per_stat[s]["d"]))
    d, p = per_stat[worst]["d"], per_stat[worst]["p_value"]
    return Check(
        _significance(p, d, limits),
        d,
        p,
        _p_rule(limits) + " (Bonferroni over statistics)",
        detail={"worst": worst, "per_stat": per_stat},
    )


def _embeddings(base: Baseline, window: Window, limits: Thresholds, seed: int) -> Check:
    if base.embeddings is None or window.embeddings is None:
        return Check(
            SKIPPED,
            reason="no projected embeddings (needs a reference file and an `embedding` output)",
        )
    value, p, bandwidth = st.mmd2_test(
        base.embeddings, window.embeddings, permutations=limits.permutations, seed=seed
    )
    verdict = DRIFT if p < limits.alpha_drift else WARN if p < limits.alpha_warn else OK
    return Check(
        verdict,
        value,
        p,
        f"permutation p < {limits.alpha_drift} drift, < {limits.alpha_warn} warn",
        detail={"bandwidth": bandwidth, "permutations": limits.permutations, "seed": seed},
    )


def _accuracy_drop(
    name: str, before: tuple[float, float, int], now: tuple[float, float, int], limits: Thresholds
) -> Check:
    """`before` and `now` are (accuracy, its variance per image, images)."""
    p = st.mean_drop(before, now)
    drop = before[0] - now[0]
    return Check(
        _magnitude(drop, limits.accuracy_warn, limits.accuracy_drift, p, limits),
        drop,
        p,
        f"drop >= {limits.accuracy_drift} drift, >= {limits.accuracy_warn} warn; "
        f"p < {limits.alpha_warn}",
        detail={"baseline": before[0], "current": now[0], "of": name},
    )


def report(
    baseline: Baseline,
    window: Window,
    *,
    uncertain_threshold: float,
    thresholds: Thresholds | None = None,
    seed: int = 0,
) -> Report:
    """Compare a window of predictions with a baseline; see the module docstring for the rule.

    Expected accuracy assumes calibrated scores: on photos like the validation photos, the
    mean top confidence estimates accuracy (the version's ECE says how well). Under drift that
    assumption itself weakens, so a drop is a warning sign, not a measurement; where the window
    has labels, the measured accuracy is reported beside it.
    """
    limits = thresholds or Thresholds()
    if window.scores.shape[1:] != (len(baseline.labels),):
        raise ValueError("the window's scores do not match the baseline's labels")
    base_mean, base_var = baseline.confidence_moments()
    top = window.scores.max(axis=1)
    measured = measured_accuracy(window)
    accuracy = {
        "baseline": base_mean,
        "current": float(top.mean()) if window.n else None,
        "measured": measured,
        "baseline_measured": baseline.accuracy,
    }
    common = {
        "n": window.n,
        "baseline_n": baseline.count,
        "baseline": baseline.source,
        "expected_accuracy": accuracy,
        "thresholds": limits,
    }
    smallest = min(window.n, baseline.count)
    if smallest < limits.min_window:
        side = "window" if window.n < limits.min_window else "baseline"
        reason = (
            f"not enough data: the {side} has {smallest} records, at least "
            f"{limits.min_window} are needed"
        )
        return Report(INSUFFICIENT, tests={}, reason=reason, **common)
    tests = {
        "class_mix": _class_mix(baseline, window, limits),
        "class_scores": _class_scores(baseline, window, limits),
        "confidence_psi": _confidence_psi(baseline, window, limits),
        "uncertain_share": _uncertain(baseline, window, uncertain_threshold, limits),
        "image_stats": _image_stats(baseline, window, limits),
        "embedding_mmd": _embeddings(baseline, window, limits, seed),
        "expected_accuracy": _accuracy_drop(
            "mean calibrated confidence",
            (base_mean, base_var, baseline.count),
            (float(top.mean()), float(top.var()), window.n),
            limits,
        ),
    }
    if measured is not None:
        known = int((window.truth >= 0).sum())  # type: ignore[operator]
        before = baseline.accuracy if baseline.accuracy is not None else base_mean
        tests["measured_accuracy"] = _accuracy_drop(
            "accuracy on the window's labels",
            (before, before * (1 - before), baseline.count),
            (measured, measured * (1 - measured), known),
            limits,
        )
    verdicts = {t.verdict for t in tests.values()}
    verdict = DRIFT if DRIFT in verdicts else WARN if WARN in verdicts else OK
    firing = [name for name, t in tests.items() if t.verdict in (WARN, DRIFT)]
    return Report(verdict, tests=tests, reason=", ".join(firing), **common)
