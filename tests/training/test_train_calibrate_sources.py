"""The per-source `uncertain` rule: the worst source's confidently-wrong share, not the pooled
one, sets the threshold; the coverage it costs is reported."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibrate
from training.config import CalibrateConfig, ConfigError, load_config

CLASSES = 3


def _rows(rng: np.random.Generator, n: int, wrong: int, wrong_conf: tuple[float, float]):
    """`n` photos, the first `wrong` answered wrongly with confidence in `wrong_conf`, the rest
    rightly with confidence in [0.6, 1)."""
    y = rng.integers(0, CLASSES, n)
    conf = rng.uniform(0.6, 1.0, n)
    conf[:wrong] = rng.uniform(*wrong_conf, wrong)
    pred = y.copy()
    pred[:wrong] = (y[:wrong] + 1) % CLASSES
    probs = np.repeat(((1 - conf) / (CLASSES - 1))[:, None], CLASSES, axis=1)
    probs[np.arange(n), pred] = conf
    return probs, y


@pytest.fixture(scope="module")
def two_sources():
    """A big source whose few mistakes are unsure, a small one confidently wrong 1 in 5."""
    rng = np.random.default_rng(3)
    big = _rows(rng, 900, 30, (0.36, 0.6))
    small = _rows(rng, 100, 20, (0.8, 0.9))
    probs = np.concatenate([big[0], small[0]])
    y = np.concatenate([big[1], small[1]])
    return probs, y, ["big"] * 900 + ["small"] * 100


def test_the_pooled_rule_leaves_one_source_confidently_wrong(two_sources):
    probs, y, sources = two_sources
    pooled = calibrate.choose_threshold(probs, y, target_accuracy=0.97, max_threshold=0.95)
    rows = calibrate.by_source(probs, y, sources, pooled.threshold)
    assert pooled.accuracy_covered >= 0.97
    assert rows["small"]["confidently_wrong"] > 0.1  # what the pooled figure hides


def test_the_per_source_rule_holds_every_source_to_the_target(two_sources):
    probs, y, sources = two_sources
    thr, met = calibrate.choose_threshold_per_source(
        probs, y, sources, max_wrong=0.02, max_threshold=0.95
    )
    assert met
    rows = calibrate.by_source(probs, y, sources, thr.threshold)
    assert all(r["confidently_wrong"] <= 0.02 for r in rows.values())
    # the lowest such threshold: one step below it, some source is over the target
    conf = np.unique(np.round(probs.max(axis=1), 4))
    below = conf[conf < thr.threshold].max()
    assert (
        max(r["confidently_wrong"] for r in calibrate.by_source(probs, y, sources, below).values())
        > 0.02
    )


def test_the_section_reports_the_coverage_it_costs(two_sources):
    probs, y, sources = two_sources
    cfg = CalibrateConfig(target_accuracy=0.97, max_threshold=0.95, threshold_rule="per_source")
    section = calibrate.uncertain_threshold(probs, y, probs, y, cfg, val_sources=sources)
    assert section["rule"] == "per_source" and section["target_met"]
    assert section["threshold"] > section["pooled_threshold"]
    assert section["coverage_cost"] == pytest.approx(
        section["pooled_val_coverage"] - section["val_coverage"], abs=1e-4
    )
    assert section["coverage_cost"] > 0
    assert max(r["confidently_wrong"] for r in section["by_source_val"].values()) <= 0.02
    assert section["test_confidently_wrong"] <= 0.02


def test_the_pooled_rule_stays_the_default(two_sources):
    probs, y, sources = two_sources
    cfg = CalibrateConfig(target_accuracy=0.97, max_threshold=0.95)
    section = calibrate.uncertain_threshold(probs, y, probs, y, cfg, val_sources=sources)
    pooled = calibrate.choose_threshold(probs, y, target_accuracy=0.97, max_threshold=0.95)
    assert section["rule"] == "pooled" and section["threshold"] == pooled.threshold
    assert "coverage_cost" not in section and set(section["by_source_val"]) == {"big", "small"}


def test_an_unreachable_target_returns_the_cap_and_says_so(two_sources):
    probs, y, sources = two_sources
    thr, met = calibrate.choose_threshold_per_source(
        probs, y, sources, max_wrong=0.0, max_threshold=0.7
    )
    assert (thr.threshold, met) == (0.7, False)
    with pytest.raises(ValueError, match="source names"):
        calibrate.choose_threshold_per_source(
            probs, y, sources[:-1], max_wrong=0.02, max_threshold=0.9
        )


def test_the_rule_is_validated():
    assert load_config(None).calibrate.threshold_rule == "pooled"
    cfg = load_config(None, ["calibrate.threshold_rule=per_source"])
    assert cfg.calibrate.threshold_rule == "per_source"
    with pytest.raises(ConfigError, match="threshold_rule"):
        load_config(None, ["calibrate.threshold_rule=worst"])
    with pytest.raises(ConfigError, match="max_confidently_wrong"):
        load_config(None, ["calibrate.max_confidently_wrong=1.5"])


def test_the_report_says_what_the_rule_cost(two_sources):
    from training.report import uncertain_rule_lines

    probs, y, sources = two_sources
    cfg = CalibrateConfig(target_accuracy=0.97, max_threshold=0.95, threshold_rule="per_source")
    section = calibrate.uncertain_threshold(probs, y, probs, y, cfg, val_sources=sources)
    text = "\n".join(uncertain_rule_lines(section))
    assert "costs" in text and f"{section['coverage_cost'] * 100:.1f}%" in text
    assert "- small: 100 validation photos" in text
    pooled = calibrate.uncertain_threshold(probs, y, probs, y, CalibrateConfig())
    assert uncertain_rule_lines(pooled) == []
