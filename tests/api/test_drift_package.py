"""The drift watch's package: built as `python -m tools.lambda_zip --package drift` builds it,
small (no Pillow, FastAPI, TFLite runtime or TensorFlow), and run in a clean process that sees
nothing but the package and the Lambda runtime's boto3: its cold start and first run are
printed (`-s` shows them) and its EMF lines judged.

The stores are local folders of the same layout as the buckets (the core reads both), with a
synthetic reference and synthetic records drawn from the same distribution (`ok`) or shifted
(`drift`)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.api import test_api_package as api_package
from tests.conftest import LABELS, tiny_fields
from tools.lambda_zip import build
from wastesort import reference
from wastesort.records import dumps, record_key
from wastesort.registry import Registry

pytestmark = pytest.mark.slow

NOW = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
WIDTH = 40
RUN = """
import json, sys, time
t0 = time.perf_counter()
from functions.drift.handler import COLD_START, handler
imported = time.perf_counter()
class Context:
    function_name = "drift"; memory_limit_in_mb = 1024; aws_request_id = "r"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:drift"
    def get_remaining_time_in_millis(self): return 300000
summary = handler({"time": sys.argv[1]}, Context())
done = time.perf_counter()
heavy = sorted(m for m in ("PIL", "fastapi", "ai_edge_litert", "tflite_runtime", "tensorflow",
                           "scipy") if m in sys.modules)
print("RESULT " + json.dumps({"summary": summary, "import_ms": (imported - t0) * 1000,
      "first_run_ms": (done - imported) * 1000, "heavy": heavy}))
"""


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Synthetic model outputs: raw embeddings, calibrated scores, image statistics."""
    scale = np.linspace(3, 0.2, WIDTH)
    embeddings = rng.normal(size=(n, WIDTH)) * scale + shift
    logits = rng.normal(size=(n, len(LABELS))) * 2 + np.eye(len(LABELS))[rng.integers(0, 6, n)] * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    stats = np.column_stack(
        [rng.normal(0.5 - shift / 10, 0.1, n), rng.normal(0.2, 0.05, n),
         rng.normal(0.3, 0.05, n), rng.normal(400, 80, n)]
    )  # fmt: skip
    return {"embeddings": embeddings, "probs": probs, "stats": stats}


def records(ref: reference.Reference, drawn: dict, version: str, source: str) -> list[dict]:
    out = []
    at = (NOW - timedelta(minutes=20)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for raw, probs, stats in zip(
        ref.project(drawn["embeddings"]), drawn["probs"], drawn["stats"], strict=True
    ):
        top = int(probs.argmax())
        record: dict[str, Any] = {
            "at": at,
            "source": source,
            "model_version": version,
            "predicted_class": LABELS[top],
            "confidence": float(probs[top]),
            "all_confidences": {k: float(v) for k, v in zip(LABELS, probs, strict=True)},
            "decision": LABELS[top] if probs[top] >= 0.5 else "uncertain",
            "embedding": [round(float(v), 5) for v in raw],
            "image_stats": dict(zip(reference.STATS, map(float, stats), strict=True)),
        }
        if source != "api":
            record["device"] = source
        out.append(record)
    return out


PYTHON, VERSION = api_package.PYTHON, api_package.VERSION
lambda_runtime = api_package.lambda_runtime
"""The Lambda runtime's boto3 beside the package (the API package's test makes it)."""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory):
    return build(
        "x86_64", python_version=VERSION, out=tmp_path_factory.mktemp("lambda"), package="drift"
    )


@pytest.fixture(scope="module")
def stores(tiny_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A registry (`v-ok` production and `v-shift`, one synthetic reference), an hour of
    records (1000 for v-ok from the API and two bins, 300 shifted for v-shift from a third),
    and three heartbeats, one of them stale."""
    root = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(7)
    base = draw(rng, 1500)
    ref = reference.build(
        base["embeddings"], base["probs"], base["probs"].argmax(axis=1), base["stats"], LABELS
    )
    (root / "reference.npz").write_bytes(ref.dumps())
    registry = Registry.from_uri(root / "registry", cache_dir=root / "cache")
    for version, aliases in (("v-ok", ["production"]), ("v-shift", [])):
        registry.publish(tiny_int8, version=version, aliases=aliases,
                         reference=root / "reference.npz", **tiny_fields())  # fmt: skip
    batches = [
        records(ref, draw(rng, 600), "v-ok", "api"),
        records(ref, draw(rng, 200), "v-ok", "bin-1"),
        records(ref, draw(rng, 200), "v-ok", "bin-2"),
        records(ref, draw(rng, 300, shift=1.5), "v-shift", "bin-3"),
    ]
    for i, batch in enumerate(batches):
        path = (
            root / "captures" / record_key(batch[0]["source"], NOW - timedelta(minutes=20), f"b{i}")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dumps(batch))
    for device, version, age in (
        ("bin-1", "v-ok", 60),
        ("bin-2", "v-ok", 7200),
        ("bin-3", "v-shift", 60),
    ):
        beat = {"at": NOW.timestamp() - age, "model": {"serving": version}}
        (root / "telemetry" / device).mkdir(parents=True)
        (root / "telemetry" / device / "heartbeat.json").write_text(json.dumps(beat))
    return {
        "registry": root / "registry",
        "captures": root / "captures",
        "telemetry": root / "telemetry",
    }


def test_the_package_holds_only_what_the_drift_path_imports(package) -> None:
    root = Path(package.directory)
    assert root.name.startswith("drift-")
    present = ("functions/drift/handler.py", "functions/api/metric_names.py", "wastesort/drift.py",
               "numpy/random", "pydantic", "aws_lambda_powertools")  # fmt: skip
    for rel in present:
        assert (root / rel).exists(), rel
    absent = ("PIL", "fastapi", "starlette", "mangum", "ai_edge_litert", "tensorflow",
              "tflite_runtime", "functions/api/app.py", "functions/hooks", "boto3")  # fmt: skip
    for rel in absent:
        assert not (root / rel).exists(), rel
    assert package.zip_bytes < 25e6 and package.pruned_bytes < 70e6
    size = f"{package.mb('pruned_bytes')} MB unzipped, {package.mb('zip_bytes')} MB zipped"
    print(f"\ndrift package ({package.arch}, Python {package.python_version}): {size}")


def test_a_clean_process_runs_the_watch_from_the_package(
    package,
    stores: dict[str, Path],
    lambda_runtime: Path,
    tmp_path: Path,
) -> None:
    env = {
        "PYTHONPATH": f"{package.directory}:{lambda_runtime}",
        "DRIFT_REGISTRY_URI": str(stores["registry"]),
        "DRIFT_RECORDS_URI": str(stores["captures"]),
        "DRIFT_TELEMETRY_URI": str(stores["telemetry"]),
        "WASTESORT_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    result = subprocess.run(
        [PYTHON, "-S", "-c", RUN, NOW.isoformat()],
        env=env, capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    found = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    assert found["heavy"] == []
    summary = found["summary"]
    assert summary["versions"]["v-ok"]["verdict"] == "ok"
    assert summary["versions"]["v-ok"]["records"] == 1000
    assert summary["versions"]["v-shift"]["verdict"] == "drift"
    assert summary["devices"]["bin-3"]["verdict"] == "drift"
    assert summary["fleet"]["stale"] == ["bin-2"]
    emf = [json.loads(line) for line in lines if line.startswith('{"_aws"')]
    assert any(
        blob.get("alias") == "production" and blob.get("DriftVerdict") == [0.0] for blob in emf
    )
    run = f"(1300 records, 2 versions, 3 devices, fleet) {found['first_run_ms']:.0f} ms"
    print(f"\ndrift package cold start: imports {found['import_ms']:.0f} ms, first run {run}")
