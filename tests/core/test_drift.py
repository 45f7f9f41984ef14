"""Drift reports: the statistics against known cases and scipy, and the CLI end to end."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tests.conftest import ROOT, SAMPLES, tiny_fields
from wastesort import Classifier, drift, reference
from wastesort import drift_stats as st
from wastesort.cli import main
from wastesort.manifest import OutputSpec
from wastesort.registry import Registry

LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]
THRESHOLD = 0.6


def _scores(rng: np.random.Generator, n: int, mix: list[float] | None = None) -> np.ndarray:
    """Peaked calibrated-looking scores whose argmax follows `mix`."""
    classes = rng.choice(len(LABELS), n, p=mix)
    logits = rng.normal(0, 1, (n, len(LABELS)))
    logits[np.arange(n), classes] += 4
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _window(
    seed: int, n: int, *, shift: float = 0.0, mix: list[float] | None = None
) -> drift.Window:
    rng = np.random.default_rng(seed)
    return drift.Window(
        scores=_scores(rng, n, mix),
        embeddings=rng.normal(shift, 1, (n, 32)),
        image_stats=rng.normal(0.5, 0.1, (n, len(reference.STATS))),
    )


def _report(base: drift.Window, current: drift.Window, **kw: object) -> drift.Report:
    baseline = drift.Baseline.from_window(base, LABELS, "synthetic")
    return drift.report(baseline, current, uncertain_threshold=THRESHOLD, **kw)  # type: ignore[arg-type]


def test_identical_samples_are_ok():
    window = _window(1, 200)
    result = _report(window, window)
    assert result.verdict == drift.OK
    assert all(t.verdict == drift.OK for t in result.tests.values())
    assert result.tests["embedding_mmd"].p_value > 0.5


def test_same_distribution_other_draw_is_ok():
    assert _report(_window(1, 300), _window(2, 300)).verdict == drift.OK


def test_shifted_gaussian_embeddings_drift_with_a_tiny_p_value():
    result = _report(_window(1, 200), _window(2, 100, shift=0.5))
    mmd = result.tests["embedding_mmd"]
    assert mmd.verdict == drift.DRIFT
    assert mmd.p_value == pytest.approx(1 / 1001)
    assert result.verdict == drift.DRIFT
    assert result.reason == "embedding_mmd"


def test_mmd_is_deterministic_for_a_seed():
    x, y = _window(1, 80).embeddings, _window(2, 80, shift=0.1).embeddings
    assert st.mmd2_test(x, y, seed=3) == st.mmd2_test(x, y, seed=3)


def test_a_reference_file_baseline_projects_and_judges_embeddings():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1, (300, 64))
    scores = _scores(rng, 300)
    stats = rng.normal(0.5, 0.1, (300, 4))
    ref = reference.build(raw, scores, scores.argmax(axis=1), stats, LABELS, meta={"version": "v1"})
    baseline = drift.Baseline.from_reference(ref)
    assert baseline.scores is None and baseline.count == 300
    shifted = drift.Window(
        scores=_scores(rng, 120),
        embeddings=ref.project(rng.normal(0.6, 1, (120, 64))),
        image_stats=rng.normal(0.5, 0.1, (120, 4)),
    )
    result = drift.report(baseline, shifted, uncertain_threshold=THRESHOLD)
    assert result.tests["class_scores"].verdict == drift.SKIPPED
    assert "per-image scores" in result.tests["class_scores"].reason
    assert result.tests["embedding_mmd"].verdict == drift.DRIFT
    assert result.verdict == drift.DRIFT
    same = drift.Window(scores=scores, embeddings=ref.embeddings, image_stats=stats)
    assert drift.report(baseline, same, uncertain_threshold=THRESHOLD).verdict == drift.OK


def test_class_mix_change_fires_the_chi_square():
    even = [1 / 6] * 6
    skewed = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
    result = _report(_window(1, 300, mix=even), _window(2, 200, mix=skewed))
    mix = result.tests["class_mix"]
    assert mix.verdict == drift.DRIFT
    assert mix.p_value < 1e-6
    assert mix.detail["total_variation"] > 0.2


def test_tiny_windows_say_not_enough_data():
    result = _report(_window(1, 200), _window(2, 5))
    assert result.verdict == drift.INSUFFICIENT
    assert result.tests == {}
    assert "not enough data" in result.reason
    judged = drift.Thresholds(min_window=60)
    assert _report(_window(1, 200), _window(2, 76), thresholds=judged).verdict != drift.INSUFFICIENT


def test_a_window_without_the_baselines_inputs_is_skipped_with_a_reason():
    bare = drift.Window(scores=_window(2, 50).scores)
    result = _report(_window(1, 100), bare)
    assert result.tests["image_stats"].verdict == drift.SKIPPED
    assert result.tests["embedding_mmd"].verdict == drift.SKIPPED
    assert result.tests["embedding_mmd"].reason


def test_confidence_drop_warns_about_expected_accuracy():
    rng = np.random.default_rng(5)
    flat = rng.dirichlet(np.ones(6), 200)  # low confidence everywhere
    base = _window(1, 300)
    result = _report(base, drift.Window(scores=flat))
    assert result.tests["expected_accuracy"].verdict == drift.DRIFT
    assert result.tests["uncertain_share"].verdict == drift.DRIFT
    assert result.tests["confidence_psi"].statistic > 0.25


def test_measured_accuracy_sits_beside_the_expected_one():
    window = _window(1, 100)
    truth = window.scores.argmax(axis=1)
    truth[:30] = (truth[:30] + 1) % 6  # 70 % right
    labelled = drift.Window(scores=window.scores, truth=truth)
    result = _report(_window(2, 200), labelled)
    assert result.expected_accuracy["measured"] == pytest.approx(0.7)
    assert result.tests["measured_accuracy"].verdict in (drift.WARN, drift.DRIFT)


def test_records_make_a_window():
    records = [
        {
            "all_confidences": {"glass": 0.7, "metal": 0.3},
            "image_stats": dict.fromkeys(reference.STATS, 0.5),
            "embedding": None,
            "label": "glass",
        }
    ]
    window = drift.Window.from_records(records, LABELS)
    assert window.scores[0].tolist() == [0, 0.7, 0.3, 0, 0, 0]
    assert window.embeddings is None
    assert window.truth.tolist() == [1]  # type: ignore[union-attr]


# --- the distributions against scipy -----------------------------------------------------------


def test_chi_square_survival_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for x, dof in [
        (0.1, 1),
        (3.84, 1),
        (10, 5),
        (50, 5),
        (200, 30),
        (0.5, 10),
        (30, 2),
        (120, 100),
    ]:
        assert st.chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)
    counts_a, counts_b = np.array([30, 20, 10, 0]), np.array([10, 25, 30, 0])
    statistic, p, dof = st.chi2_homogeneity(counts_a, counts_b)
    expected = stats.chi2_contingency(np.vstack([counts_a, counts_b])[:, :3], correction=False)
    assert (statistic, p, dof) == pytest.approx((expected.statistic, expected.pvalue, expected.dof))


def test_ks_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for lam in (0.3, 0.5, 0.8, 1.0, 1.36, 2.0, 3.0):
        assert st.kolmogorov_sf(lam) == pytest.approx(stats.kstwobign.sf(lam), rel=1e-9)
    rng = np.random.default_rng(2)
    for n, m, shift in [
        (60, 300, 0.3),
        (300, 300, 0.1),
        (100, 40, 0.0),
        (500, 500, 0.2),
        (30, 30, 1),
    ]:
        a, b = rng.normal(size=n), rng.normal(shift, size=m)
        d, p = st.ks_2samp(a, b)
        expected = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(expected.statistic)
        assert p == pytest.approx(expected.pvalue, rel=0.1, abs=1e-3)


# --- the CLI end to end (the bundled model) ----------------------------------------------------


def _darkened(out: Path) -> Path:
    """The sample photos, darker and with a blue cast, in the same class folders."""
    for path in sorted(SAMPLES.glob("*/*.jpg")):
        target = out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            dark = ImageEnhance.Brightness(image.convert("RGB")).enhance(0.45)
            r, g, b = dark.split()
            cast = Image.merge(
                "RGB", (r.point(lambda v: v * 0.7), g, b.point(lambda v: min(255, v * 1.4)))
            )
            cast.save(target, quality=90)
    return out


def _drift(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["drift", "--model", str(ROOT / "models"), "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else {}


def test_cli_same_photos_ok_darkened_photos_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    code, same = _drift(capsys, "--current", str(SAMPLES), "--reference", str(SAMPLES))
    assert code == 0
    assert same["verdict"] == "ok"
    assert same["n"] == 18
    assert same["expected_accuracy"]["measured"] is not None  # class folders: a dataset
    dark = _darkened(tmp_path / "dark")
    plot = tmp_path / "drift.png"
    plotting = ["--plot", str(plot)] if find_spec("matplotlib") else []  # the train extra
    code, moved = _drift(capsys, "--current", str(dark), "--reference", str(SAMPLES), *plotting)
    assert code == 0
    assert moved["verdict"] == "drift"
    assert moved["tests"]["image_stats"]["verdict"] == "drift"
    assert moved["tests"]["embedding_mmd"]["verdict"] != "skipped"  # the bundled model embeds
    if plotting:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    unreferenced = f"{ROOT / 'models'}@v20261124-9f46740a"  # a version with no reference file
    assert main(["drift", "--model", unreferenced, "--current", str(SAMPLES)]) == 2
    assert "no reference file" in capsys.readouterr().err
    missing = tmp_path / "nothing"
    args = ["drift", "--model", str(ROOT / "models"), "--current", str(missing)]
    assert main([*args, "--reference", str(SAMPLES)]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.fixture
def referenced(tmp_path: Path, tiny_models: Path) -> Path:
    """A registry whose version has a reference file (the two-output tiny model, its
    reference built from the sample photos)."""
    model = tiny_models / "named" / "tiny_int8.tflite"
    clf = Classifier.load(model, labels=LABELS)
    photos = sorted(SAMPLES.glob("*/*.jpg"))
    arrays = np.stack([clf.preprocess(p.read_bytes()) for p in photos])
    outputs = clf.outputs_from_arrays(arrays, ("logits", "embedding"))
    scores = clf.scores_from_arrays(arrays)
    stats = reference.image_stats_batch(arrays)
    ref = reference.build(outputs["embedding"], scores, scores.argmax(axis=1), stats, LABELS)
    (tmp_path / "reference.npz").write_bytes(ref.dumps())
    Registry.from_uri(tmp_path / "reg").publish(
        model,
        version="tiny-2",
        aliases=["production"],
        reference=tmp_path / "reference.npz",
        outputs={"logits": tiny_fields()["output"], "embedding": OutputSpec(kind="embedding")},
        **tiny_fields(),
    )
    return tmp_path / "reg"


def test_cli_uses_the_versions_reference_file(
    referenced: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    args = ["drift", "--model", str(referenced), "--json", "--current"]
    assert main([*args, str(SAMPLES)]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["baseline"].startswith("reference file")
    assert same["verdict"] == "ok"
    assert same["tests"]["embedding_mmd"]["verdict"] == "ok"
    assert same["tests"]["class_scores"]["verdict"] == "skipped"
    assert main([*args, str(_darkened(tmp_path / "dark"))]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["verdict"] == "drift"
    assert moved["tests"]["embedding_mmd"]["p_value"] < 0.01
    # A folder asked for by name wins over the reference file, and says so.
    assert main([*args, str(SAMPLES), "--reference", str(SAMPLES)]) == 0
    out, err = capsys.readouterr()
    chosen = json.loads(out)
    assert "not the reference file of tiny-2" in err
    assert chosen["baseline"] == str(SAMPLES)
    assert chosen["tests"]["class_scores"]["verdict"] != "skipped"  # per-image scores: a folder
