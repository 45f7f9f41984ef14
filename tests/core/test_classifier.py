from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LABELS, ROOT, SAMPLES, sample_bytes
from wastesort import Classifier, Prediction
from wastesort.errors import EmptyImageError, IntegrityError, ModelError
from wastesort.manifest import InputSpec
from wastesort.registry import Registry
from wastesort.runtime import backend

ALL_SAMPLES = sorted(SAMPLES.rglob("*.jpg"))


@pytest.fixture
def clf(registry_dir: Path, tmp_path: Path) -> Classifier:
    return Classifier.load(registry_dir, cache_dir=tmp_path / "c")


def test_predict_returns_the_contract_fields(clf: Classifier):
    p = clf.predict(sample_bytes("glass"))
    assert isinstance(p, Prediction)
    assert set(p.to_dict()) == {
        "predicted_class",
        "confidence",
        "all_confidences",
        "decision",
        "model_version",
    }
    assert p.model_version == "tiny-1"
    assert set(clf.load_timings) == {"fetch_ms", "build_ms"}
    assert p.predicted_class in LABELS
    assert p.decision == p.predicted_class  # threshold 0
    assert sum(p.all_confidences.values()) == pytest.approx(1.0, abs=1e-4)
    assert p.confidence == max(p.all_confidences.values())
    assert list(p.all_confidences) == sorted(p.all_confidences, key=p.all_confidences.get)[::-1]


def test_scores_are_dequantized_softmax_of_the_int8_logits(clf: Classifier, tiny_int8: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tiny_int8))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    data = sample_bytes("metal")
    interpreter.set_tensor(inp["index"], clf.preprocess(data)[None])
    interpreter.invoke()
    scale, zero_point = out["quantization"]
    logits = scale * (interpreter.get_tensor(out["index"])[0].astype(np.float64) - zero_point)
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(clf.scores(data), expected, atol=1e-6)


def test_top_k_and_threshold_override(registry_dir: Path, tmp_path: Path):
    clf = Classifier.load(registry_dir, cache_dir=tmp_path / "c", uncertain_threshold=0.99)
    p = clf.predict(sample_bytes("paper"), top_k=2)
    assert len(p.all_confidences) == 2
    assert p.decision == "uncertain"


def test_batch_matches_single_predictions(clf: Classifier):
    images = [path.read_bytes() for path in ALL_SAMPLES[:7]]
    batch = clf.predict_batch(images)
    assert batch == [clf.predict(data) for data in images]


def test_batch_can_return_per_image_errors(clf: Classifier):
    good = sample_bytes("trash")
    results = clf.predict_batch([good, b"", good], return_exceptions=True)
    assert isinstance(results[1], EmptyImageError)
    assert results[0] == results[2] == clf.predict(good)
    with pytest.raises(EmptyImageError):
        clf.predict_batch([good, b""])


def test_float_model_without_batch_dimension(tiny_models: Path):
    clf = Classifier.load(tiny_models / "tiny_float.tflite", labels=LABELS)
    images = [path.read_bytes() for path in ALL_SAMPLES[:3]]
    assert clf.predict_batch(images) == [clf.predict(d) for d in images]
    assert clf.entry.input == InputSpec(height=48, width=64, dtype="float32")


def test_bare_tflite_reads_labels_beside_it(tmp_path: Path, tiny_int8: Path):
    model = tmp_path / "model.tflite"
    model.write_bytes(tiny_int8.read_bytes())
    with pytest.raises(ModelError, match="no labels"):
        Classifier.load(model)
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    clf = Classifier.load(model)
    assert clf.labels == LABELS
    assert clf.version.startswith("model-")
    named = tmp_path / "my model@v2.tflite"  # not a registry ref; spaces are fine too
    named.write_bytes(tiny_int8.read_bytes())
    assert Classifier.load(named).version.startswith("my-model-v2-")


@pytest.mark.parametrize("pool_size", [1, 4])
def test_concurrent_callers_get_the_serial_answers(registry_dir: Path, tmp_path: Path, pool_size):
    clf = Classifier.load(registry_dir, cache_dir=tmp_path / "c", pool_size=pool_size)
    images = [path.read_bytes() for path in ALL_SAMPLES] * 2
    serial = [clf.predict(data) for data in images]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(clf.predict, images)) == serial


def test_expected_sha256_is_enforced(registry_dir: Path, tmp_path: Path):
    entry = Registry.from_uri(registry_dir).resolve()
    Classifier.load(registry_dir, cache_dir=tmp_path / "c", expected_sha256=entry.sha256)
    with pytest.raises(IntegrityError):
        Classifier.load(registry_dir, cache_dir=tmp_path / "c", expected_sha256="0" * 64)


def test_manifest_that_lies_about_the_input_size_is_refused(tmp_path: Path, tiny_int8: Path):
    from tests.conftest import tiny_fields

    Registry.from_uri(tmp_path / "r").publish(
        tiny_int8,
        version="liar",
        aliases=["production"],
        **tiny_fields(input=InputSpec(height=224, width=224)),
    )
    with pytest.raises(ModelError, match="takes"):
        Classifier.load(tmp_path / "r", cache_dir=tmp_path / "c")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_serving_core_never_imports_tensorflow(registry_dir: Path):
    result = _run(
        "import sys, wastesort\n"
        f"c = wastesort.Classifier.load({str(registry_dir)!r})\n"
        f"c.predict(open({str(ALL_SAMPLES[0])!r}, 'rb').read())\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not bad, bad\n"
        "print(c.runtime.name)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ai-edge-litert"


def test_missing_edgetpu_falls_back_to_cpu_quietly(registry_dir: Path):
    result = _run(
        "import wastesort\n"
        f"c = wastesort.Classifier.load({str(registry_dir)!r}, delegate='edgetpu')\n"
        f"print(c.predict(open({str(ALL_SAMPLES[0])!r}, 'rb').read()).predicted_class)\n"
        "print(c.runtime.delegate)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "None"  # ran on the CPU
    assert "runs on the CPU" in result.stderr
    assert "Exception ignored" not in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_delegate_library_is_logged_not_noisy(tmp_path: Path, tiny_int8: Path):
    from tests.conftest import tiny_fields

    Registry.from_uri(tmp_path / "r").publish(
        tiny_int8,
        version="tpu",
        aliases=["production"],
        extra_files={"edgetpu": tiny_int8},
        **tiny_fields(),
    )
    result = _run(
        "from wastesort.runtime import load_edgetpu_delegate\n"
        "assert load_edgetpu_delegate() is None\n"
        "import wastesort\n"
        f"c = wastesort.Classifier.load({str(tmp_path / 'r')!r}, delegate='edgetpu',"
        f" cache_dir={str(tmp_path / 'c')!r})\n"
        "print(c.runtime.delegate, c.entry.version)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "tpu"]
    assert "Edge TPU delegate unavailable" in result.stderr
    assert "Exception ignored" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WASTESORT_RUNTIME", "litert", "WASTESORT_RUNTIME=litert is not a runtime"),
        ("WASTESORT_RUNTIME", "tensorflow", "ai-edge-litert, tflite-runtime"),
        ("WASTESORT_NUM_THREADS", "two", "WASTESORT_NUM_THREADS=two is not a whole number"),
    ],
)
def test_a_bad_runtime_setting_is_a_clear_model_error(
    registry_dir: Path, monkeypatch, variable: str, value: str, message: str
):
    monkeypatch.setenv(variable, value)
    backend.cache_clear()
    try:
        with pytest.raises(ModelError, match=message):
            Classifier.load(registry_dir)
    finally:
        backend.cache_clear()
