"""A tiny run end to end: a few images, one epoch, a small input -> a valid registry entry
that `wastesort.Classifier` loads, and an MLflow run with its registered model and alias."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import LABELS, SAMPLES
from training.config import load_config
from wastesort import Classifier
from wastesort.manifest import Manifest
from wastesort.signing import generate_keypair, verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    from training.pipeline import run

    tmp = tmp_path_factory.mktemp("e2e")
    private, public = generate_keypair()
    (tmp / "signing.pem").write_bytes(private)
    (tmp / "signing.pub").write_bytes(public)
    for label in LABELS:
        shutil.copytree(SAMPLES / label, tmp / "data" / label)
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "training" / "configs" / "quick.yaml",
        [
            f"data.dir={tmp / 'data'}",
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
            "registry.golden_per_class=1",
            f"registry.signing_key={tmp / 'signing.pem'}",
        ],
    )
    return cfg, run(cfg), tmp


def test_registry_entry_is_complete_and_loadable(tiny_run):
    _, result, tmp = tiny_run
    manifest = Manifest.parse((tmp / "registry" / "manifest.json").read_bytes())
    entry = manifest.resolve("production")
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
    clf = Classifier.load(str(tmp / "registry"), cache_dir=tmp / "dl")
    for item in entry.golden_set:
        image = (tmp / "registry" / item.image.path).read_bytes()
        assert clf.predict(image).predicted_class == item.expected_class
    run_dir = result.run_dir
    for name in (
        "split.csv",
        "model_card.md",
        "summary.json",
        "plots/confusion_int8.png",
        "plots/confusion_int8.json",
        "plots/reliability_int8.png",
        "plots/hardest_mistakes_int8.png",
    ):
        assert (run_dir / name).exists(), name


def test_mlflow_run_and_registered_alias(tiny_run):
    import mlflow

    cfg, result, _ = tiny_run
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dataset_fingerprint"] == result.summary["dataset_fingerprint"]
    assert "test.int8.accuracy" in run.data.metrics
    assert run.data.params["input.height"] == "64"
    version = client.get_model_version_by_alias(cfg.mlflow.registered_model, "quick")
    assert version.run_id == result.mlflow_run_id


def test_a_model_the_gate_refused_is_registered_but_gets_no_alias(tiny_run):
    import mlflow

    from training.tracking import Tracker

    cfg, result, tmp = tiny_run
    tracker = Tracker(cfg.mlflow, "refused")
    (tmp / "model_int8.tflite").write_bytes(b"not served")
    tracker.mlflow.log_artifact(str(tmp / "model_int8.tflite"), "tflite")
    refused = tracker.register("tflite/model_int8.tflite", gate_passed=False)
    tracker.end()
    client = mlflow.MlflowClient()
    alias = cfg.mlflow.aliases[0]
    assert client.get_model_version_by_alias(cfg.mlflow.registered_model, alias).run_id == (
        result.mlflow_run_id
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
