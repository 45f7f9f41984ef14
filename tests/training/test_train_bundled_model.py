"""The bundled registry (`models/`, made by the default config) classifies known photos
through the CLI with no `--model`. The samples are held out of training (`data.test_include`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLES
from training.config import GateConfig
from wastesort.manifest import Manifest

MANIFEST = ROOT / "models" / "manifest.json"
KNOWN = {
    "cardboard/cardboard53.jpg": "cardboard",
    "glass/glass51.jpg": "glass",
    "metal/metal47.jpg": "metal",
    "paper/paper95.jpg": "paper",
    "plastic/plastic106.jpg": "plastic",
    "trash/trash49.jpg": "trash",
}

pytestmark = pytest.mark.skipif(not MANIFEST.exists(), reason="no bundled model in models/")


def _classify(*paths: str) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "wastesort", "classify", *paths, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_bundled_manifest_is_the_published_int8_model():
    manifest = Manifest.parse(MANIFEST.read_bytes())
    entry = manifest.resolve("production")
    assert entry.input.dtype == "uint8"
    assert (entry.input.scale, entry.input.zero_point) == (1.0, 0)
    assert entry.output.kind == "logits"
    assert entry.size <= 6 * 1024 * 1024
    assert len(entry.golden_set) >= 6
    assert entry.mlflow_run_id
    assert entry.dataset_fingerprint
    # published by the default config, through the default quantization gate
    gate, defaults = entry.metrics["gate"], GateConfig()
    assert gate["passed"]
    assert gate["min_agreement"] >= defaults.min_agreement
    assert gate["max_accuracy_drop"] <= defaults.max_accuracy_drop
    assert entry.metrics["agreement_int8_float"] >= defaults.min_agreement


def test_cli_classifies_known_samples_with_the_bundled_model():
    rows = _classify(*(str(SAMPLES / p) for p in KNOWN))
    version = Manifest.parse(MANIFEST.read_bytes()).resolve("production").version
    for row, expected in zip(rows, KNOWN.values(), strict=True):
        assert row["predicted_class"] == expected, row
        assert row["decision"] == expected, row
        assert row["model_version"] == version


def test_most_held_out_samples_are_right():
    rows = _classify(str(SAMPLES))
    right = sum(row["predicted_class"] == row["path"].split("/")[-2] for row in rows)
    assert len(rows) == 18
    assert right >= 14  # 15/18 when this model was published; the test split says ~92%
