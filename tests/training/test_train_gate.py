"""The quantization gate: a model that loses too much in int8 is never published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELS, tiny_fields
from training.config import GateConfig
from training.publish import publish
from training.quantize import GateError, GateResult, gate

Y = np.array([0, 1, 2, 3, 4, 5] * 10)


def _publish(registry: Path, model: Path, version: str, verdict: GateResult, aliases: list[str]):
    fields = tiny_fields()
    return publish(
        str(registry),
        model,
        version=version,
        gate=verdict,
        labels=LABELS,
        input_spec=fields["input"],
        output=fields["output"],
        metrics={},
        temperature=1.0,
        uncertain_threshold=0.0,
        dataset_fingerprint="f" * 64,
        mlflow_run_id=None,
        source_config={},
        golden=[],
        aliases=aliases,
    )


def _another_model(tiny_models: Path, model: Path) -> Path:
    return next(p for p in tiny_models.glob("*.tflite") if p.read_bytes() != model.read_bytes())


def test_gate_passes_an_int8_model_that_agrees():
    result = gate(Y.copy(), Y.copy(), Y, GateConfig())
    assert result.passed
    assert result.agreement == 1.0
    assert "passed" in result.message()


def test_gate_rejects_accuracy_drop_and_disagreement():
    int8 = Y.copy()
    int8[:6] = (int8[:6] + 1) % 6  # 10% of answers change, all of them to wrong ones
    result = gate(Y.copy(), int8, Y, GateConfig(max_accuracy_drop=0.01, min_agreement=0.98))
    assert not result.passed
    message = result.message()
    assert "FAILED" in message
    assert "max_accuracy_drop" in message
    assert "min_agreement" in message
    assert result.accuracy_drop == pytest.approx(0.1)


def test_thresholds_are_configurable():
    int8 = Y.copy()
    int8[0] = 1
    assert not gate(Y.copy(), int8, Y, GateConfig()).passed
    assert gate(Y.copy(), int8, Y, GateConfig(max_accuracy_drop=0.05, min_agreement=0.9)).passed


def test_publish_refuses_a_failing_model_and_leaves_the_registry_alone(
    tmp_path: Path, tiny_int8: Path
):
    int8 = Y.copy()
    int8[:12] = (int8[:12] + 1) % 6
    failing = gate(Y.copy(), int8, Y, GateConfig())
    with pytest.raises(GateError, match=r"refusing to publish v-bad .*quantization gate FAILED"):
        _publish(tmp_path / "reg", tiny_int8, "v-bad", failing, ["production"])
    assert not (tmp_path / "reg" / "manifest.json").exists()
    assert not list(tmp_path.rglob("*.tflite"))  # nothing was uploaded either


def test_publishing_a_new_version_moves_production_and_keeps_the_old_one(
    tmp_path: Path, tiny_int8: Path, tiny_models: Path
):
    from wastesort.registry import Registry

    passing = gate(Y.copy(), Y.copy(), Y, GateConfig())
    other = _another_model(tiny_models, tiny_int8)
    _publish(tmp_path / "reg", tiny_int8, "v-old", passing, ["production"])
    _publish(tmp_path / "reg", other, "v-new", passing, ["production"])
    registry = Registry.from_uri(tmp_path / "reg")
    assert registry.resolve("production").version == "v-new"
    assert set(registry.manifest().versions) == {"v-old", "v-new"}


def test_publishing_the_same_bytes_again_moves_the_aliases_and_uploads_nothing(
    tmp_path: Path, tiny_int8: Path, tiny_models: Path
):
    """A rerun that makes a byte-identical model (same version id) is not an error."""
    from wastesort.errors import VersionExistsError
    from wastesort.registry import Registry

    passing = gate(Y.copy(), Y.copy(), Y, GateConfig())

    def again(model: Path, aliases: list[str]):
        return _publish(tmp_path / "reg", model, "v-same", passing, aliases)

    first = again(tiny_int8, ["production"])
    manifest_before = (tmp_path / "reg" / "manifest.json").read_text()
    assert again(tiny_int8, ["production"]) == first
    assert (tmp_path / "reg" / "manifest.json").read_text() == manifest_before
    again(tiny_int8, ["production", "canary"])
    assert Registry.from_uri(tmp_path / "reg").resolve("canary").version == "v-same"
    other = _another_model(tiny_models, tiny_int8)
    with pytest.raises(VersionExistsError):  # same id, other bytes: a real clash
        again(other, [])
