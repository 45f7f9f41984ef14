"""Tiny runs end to end, as champion and challenger: a train source and an eval source (with
photos of none of the classes), a registry whose `production` champion the run is compared
with, a challenger published as `candidate`; a failing verdict publishes nothing unless forced
with a reason, which is recorded."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import LABELS, SAMPLES, sample_bytes, tiny_fields
from tests.training.conftest import DATA, jpeg
from training.compare import VerdictError
from training.config import load_config
from wastesort import Classifier
from wastesort.manifest import Manifest
from wastesort.registry import GoldenSample, Registry
from wastesort.signing import generate_keypair, verify

pytestmark = pytest.mark.slow

WRONG = [f"not-{label}" for label in LABELS]
"""The champion's labels: none is a class, so it is wrong on every photo (a deterministic
champion for any challenger that gets one photo right to beat)."""


def _eval_source(root: Path) -> Path:
    """Three committed glass bottle photos (two of them one group) and two photos of none of
    the classes, in the shared data's shape (index.csv, unmapped/index.csv)."""
    (root / "glass").mkdir(parents=True)
    rows = []
    for i, photo in enumerate(sorted(DATA.glob("*.jpg"))):
        shutil.copy(photo, root / "glass" / photo.name)
        rows.append([f"glass/{photo.name}", "glass", f"g{min(i, 1)}", photo.name, _sha(photo)])
    _index(root, rows)
    food = root / "unmapped" / "food"
    food.mkdir(parents=True)
    for i in range(2):
        (food / f"f{i}.jpg").write_bytes(jpeg(900 + i, colour=90))
    _index(
        root / "unmapped",
        [[f"food/f{i}.jpg", "food", "", "", _sha(food / f"f{i}.jpg")] for i in range(2)],
    )
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _index(root: Path, rows: list[list[str]]) -> None:
    with (root / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group", "source_path", "sha256"])
        writer.writerows(rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_int8: Path):
    tmp = tmp_path_factory.mktemp("e2e")
    private, public = generate_keypair()
    (tmp / "signing.pem").write_bytes(private)
    (tmp / "signing.pub").write_bytes(public)
    for label in LABELS:
        shutil.copytree(SAMPLES / label, tmp / "data" / label)
    _eval_source(tmp / "bottles")
    Registry.from_uri(tmp / "registry", cache_dir=tmp / "dl").publish(
        tiny_int8,
        version="champion-1",
        golden=[GoldenSample("glass.jpg", sample_bytes("glass"), WRONG[1])],
        aliases=["production"],
        **tiny_fields(labels=WRONG),
    )
    return tmp


def _config(tmp: Path, *extra: str):
    return load_config(
        Path(__file__).resolve().parents[2] / "training" / "configs" / "quick.yaml",
        [
            "data.sources.realwaste-sample=null",
            f"data.sources.trashnet.dir={tmp / 'data'}",
            f"data.sources.bottles={{dir: {tmp / 'bottles'}, role: eval}}",
            "data.test_include=[]",
            "input.height=64",
            "input.width=48",
            "augment.views=2",
            "train.head.epochs=1",
            "quantize.modes=[int8]",
            "quantize.representative_images=4",
            "quantize.gate.min_agreement=0",
            "quantize.gate.max_accuracy_drop=1",
            f"output_dir={tmp / 'runs'}",
            f"cache_dir={tmp / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{tmp / 'mlruns.db'}",
            f"mlflow.artifact_location={tmp / 'mlruns'}",
            f"registry.uri={tmp / 'registry'}",
            "registry.aliases=[candidate]",
            "registry.golden_per_class=1",
            f"registry.signing_key={tmp / 'signing.pem'}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def tiny_run(setup: Path):
    from training.pipeline import run

    cfg = _config(setup)
    return cfg, run(cfg), setup


def test_the_challenger_is_published_as_candidate_and_production_stays(tiny_run):
    _, result, tmp = tiny_run
    manifest = Manifest.parse((tmp / "registry" / "manifest.json").read_bytes())
    assert manifest.aliases["production"].version == "champion-1"
    entry = manifest.resolve("candidate")
    assert entry.version == result.published_version
    assert entry.labels == LABELS
    assert (entry.input.height, entry.input.width, entry.input.dtype) == (64, 48, "uint8")
    assert (entry.input.scale, entry.input.zero_point) == (1.0, 0)
    assert entry.output.kind == "logits"
    assert entry.temperature > 0
    assert 0 <= entry.uncertain_threshold <= 1
    assert entry.dataset_fingerprint == result.summary["dataset_fingerprint"]
    assert entry.mlflow_run_id == result.mlflow_run_id
    assert entry.source_config["input"]["height"] == 64
    assert {"accuracy", "macro_f1", "ece", "per_class_recall"} <= set(entry.metrics["int8"])
    assert entry.golden_set
    verify(entry, tmp / "signing.pub")  # signed with registry.signing_key
    clf = Classifier.load(f"{tmp / 'registry'}@candidate", cache_dir=tmp / "dl")
    for item in entry.golden_set:
        image = (tmp / "registry" / item.image.path).read_bytes()
        assert clf.predict(image).predicted_class == item.expected_class
    # Two named outputs and a reference file: the manifest is schema 2 from this publish on.
    assert manifest.schema_version == 2
    assert set(entry.outputs or {}) == {"logits", "embedding"}
    assert entry.outputs["embedding"].kind == "embedding"
    assert entry.reference is not None and entry.reference.path.endswith("reference.npz")
    assert clf.reference is not None and clf.reference.labels == LABELS
    assert clf.reference.meta["version"] == entry.version
    extras = clf.predict(image)
    assert len(extras.embedding or []) == clf.reference.dims
    assert set(extras.image_stats or {}) == {"brightness", "contrast", "colourfulness", "blur"}
    assert (result.run_dir / "reference.npz").exists()
    for name in (
        "split.csv",
        "model_card.md",
        "summary.json",
        "plots/confusion_int8.png",
        "plots/confusion_int8.json",
        "plots/reliability_int8.png",
        "plots/hardest_mistakes_int8.png",
    ):
        assert (result.run_dir / name).exists(), name


def test_the_comparison_and_verdict_are_in_the_manifest_report_and_summary(tiny_run):
    _, result, tmp = tiny_run
    entry = Manifest.parse((tmp / "registry" / "manifest.json").read_bytes()).resolve("candidate")
    champion = entry.metrics["champion"]
    assert champion["verdict"]["passed"] is True
    assert champion["verdict"]["forced"] is None
    assert champion["champion"]["version"] == "champion-1"
    assert champion["challenger"]["version"] == entry.version
    old, new = champion["champion"]["table"], champion["challenger"]["table"]
    assert (
        set(old)
        == set(new)
        == {
            "trashnet",
            "bottles",
            "bottles/unmapped",
            "golden:challenger",
            "golden:champion",
            "field",
            "union",
        }
    )
    assert old["union"]["accuracy"] == 0.0  # its labels are no class
    assert new["union"]["accuracy"] > 0
    assert (new["bottles"]["n"], new["bottles/unmapped"]["n"], new["union"]["n"]) == (3, 2, 9)
    per_source = entry.metrics["per_source"]  # the published variant's table
    assert set(per_source["bottles"]) >= {
        "accuracy",
        "macro_f1",
        "decided",
        "accuracy_decided",
        "confidently_wrong",
        "recall",
    }
    assert 0 <= per_source["bottles/unmapped"]["uncertain"] <= 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["champion"]["verdict"]["passed"] is True
    assert set(summary["per_source"]) == {"keras", "int8"}
    assert summary["data"]["sources"]["bottles"]["per_class"] == {"glass": 3}
    assert summary["data"]["sources"]["bottles"]["unmapped"] == 2
    card = (result.run_dir / "model_card.md").read_text()
    assert "## Against the champion" in card
    assert "Verdict: **passes**" in card
    assert "| bottles | eval | 3 |" in card
    split = (result.run_dir / "split.csv").read_text()
    assert "eval,bottles,glass/" in split
    assert "unmapped,bottles,unmapped/food/f0.jpg,food" in split


def test_mlflow_run_carries_the_tables_and_the_verdict(tiny_run):
    import mlflow

    cfg, result, _ = tiny_run
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dataset_fingerprint"] == result.summary["dataset_fingerprint"]
    assert run.data.tags["verdict"] == "passed"
    assert run.data.tags["champion_version"] == "champion-1"
    assert "test.int8.accuracy" in run.data.metrics
    assert "source.int8.bottles.accuracy" in run.data.metrics
    assert "source.int8.bottles/unmapped.uncertain" in run.data.metrics
    assert "champion.champion.union.accuracy" in run.data.metrics
    assert run.data.params["input.height"] == "64"
    version = client.get_model_version_by_alias(cfg.mlflow.registered_model, "quick")
    assert version.run_id == result.mlflow_run_id


def test_a_failing_verdict_publishes_nothing_unless_forced_with_a_reason(tiny_run):
    import mlflow

    from training.pipeline import run

    cfg, first, tmp = tiny_run
    manifest = tmp / "registry" / "manifest.json"
    before = manifest.read_bytes()
    # The first challenger is now the champion; `field` with no eval source cannot be beaten.
    rule = [
        "champion.alias=candidate",
        "registry.aliases=[challenger]",
        "data.sources.bottles=null",
        "champion.better_on=[field]",
        "train.seed=7",  # another model, not the champion's bytes again
    ]
    with pytest.raises(VerdictError, match=r"does not beat the champion.*not better on field"):
        run(_config(tmp, *rule))
    assert manifest.read_bytes() == before
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    refused = [
        v
        for v in mlflow.MlflowClient().search_model_versions(
            f"name='{cfg.mlflow.registered_model}'"
        )
        if v.tags.get("verdict") == "failed"
    ]
    assert len(refused) == 1
    assert not refused[0].aliases
    forced = run(_config(tmp, *rule, "champion.force='a test: forced on purpose'"))
    entry = Manifest.parse(manifest.read_bytes()).resolve("challenger")
    assert entry.version == forced.published_version
    verdict = entry.metrics["champion"]["verdict"]
    assert verdict["passed"] is False
    assert verdict["forced"] == "a test: forced on purpose"
    assert entry.metrics["champion"]["champion"]["version"] == first.published_version
    assert (
        "Published anyway (forced): a test: forced on purpose"
        in (forced.run_dir / "model_card.md").read_text()
    )


def test_a_model_the_gate_refused_is_registered_but_gets_no_alias(tiny_run):
    import mlflow

    from training.tracking import Tracker

    cfg, _, tmp = tiny_run
    tracker = Tracker(cfg.mlflow, "refused")
    (tmp / "model_int8.tflite").write_bytes(b"not served")
    tracker.mlflow.log_artifact(str(tmp / "model_int8.tflite"), "tflite")
    refused = tracker.register("tflite/model_int8.tflite", gate_passed=False)
    tracker.end()
    client = mlflow.MlflowClient()
    alias = cfg.mlflow.aliases[0]
    assert client.get_model_version_by_alias(cfg.mlflow.registered_model, alias).run_id != (
        tracker.run_id
    )
    version = client.get_model_version(cfg.mlflow.registered_model, refused)
    assert version.tags["gate"] == "failed"
    assert alias not in version.aliases


def test_an_experiment_keeps_its_artifact_location(tiny_run):
    from training.config import ConfigError
    from training.tracking import Tracker

    cfg, _, tmp = tiny_run
    moved = cfg.mlflow.model_copy(update={"artifact_location": str(tmp / "elsewhere")})
    with pytest.raises(ConfigError, match=r"mlflow\.artifact_location: experiment 'wastesort'"):
        Tracker(moved, "moved")
