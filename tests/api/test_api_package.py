"""The Lambda package: built the way `make package` builds it (`python -m tools.lambda_zip`:
pip --platform, pruned), then proven to classify in a clean process that sees nothing but the
package (no venv, no site).

The x86_64 variant is built for Python 3.12 (the Lambda runtime) and run with it when this
machine has one (pyenv's, say), else for this machine's Python; the wheels are cached in
build/wheels/, so only the first run downloads them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.api.conftest import gateway_event
from tests.conftest import sample_bytes
from tools.lambda_zip import PYTHON_VERSION, build, find_python

pytestmark = pytest.mark.slow

RUNTIME_PYTHON = find_python(PYTHON_VERSION)
PYTHON = RUNTIME_PYTHON or sys._base_executable
VERSION = PYTHON_VERSION if RUNTIME_PYTHON else f"{sys.version_info[0]}.{sys.version_info[1]}"

CHECK = """
import json, sys
events = json.load(open(sys.argv[1]))
from functions.api.handler import handler, COLD_START
answers = [handler(event, None) for event in events]
from functions.hooks import pre_traffic  # the other handler in the package imports too
try:
    import tensorflow  # noqa: F401
    tf = True
except ImportError:
    tf = False
print(json.dumps({
    "answers": answers,
    "cold": COLD_START,
    "tensorflow": tf,
    "paths": sorted({m.__file__.split("/site-packages/")[0] for m in list(sys.modules.values())
                     if getattr(m, "__file__", None) and "site-packages" in m.__file__}),
}))
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("lambda")
    return build("x86_64", python_version=VERSION, out=out)


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the Lambda runtime puts on the path besides the package: boto3 and its deps."""
    import boto3

    out = tmp_path_factory.mktemp("var-runtime")
    site = Path(boto3.__file__).parent.parent
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"):
        (out / name).symlink_to(site / name)
    return out


def test_pruned_package_is_smaller_and_complete(package):
    assert package.pruned_bytes < package.unpruned_bytes * 0.6
    assert package.compiled  # .pyc for this Python, as the Lambda build has for 3.12
    root = Path(package.directory)
    for required in (
        "functions/api/handler.py",
        "functions/hooks/pre_traffic.py",
        "wastesort/classifier.py",
        "ai_edge_litert/interpreter.py",
    ):
        assert (root / required).exists(), required
    for gone in (
        "tools",  # the builder is a build tool, not runtime code
        "tests",
        "bench",
        "boto3",
        "botocore",
        "ai_edge_litert/libLiteRtWebGpuAccelerator.so",
        "ai_edge_litert/tools",
        "numpy/_core/tests",
    ):
        assert not (root / gone).exists(), gone
    assert not list(root.rglob("*.pyi"))
    tag = f"cpython-{VERSION.replace('.', '')}"
    assert (root / f"functions/api/__pycache__/handler.{tag}.pyc").exists()
    names = zipfile.ZipFile(package.zip_path).namelist()
    assert "functions/api/handler.py" in names and "functions/hooks/pre_traffic.py" in names


def test_pruned_package_classifies_in_a_clean_process(
    package, lambda_runtime, api_registry, tmp_path, request
):
    png, webp = request.getfixturevalue("png"), request.getfixturevalue("webp")
    events = [
        gateway_event("v2", "GET", "/health"),
        gateway_event(
            "v2", "POST", "/predict", body=sample_bytes("glass"), content_type="image/jpeg"
        ),
        gateway_event("v1", "POST", "/predict", body=png, content_type="image/png"),
        gateway_event("v2", "POST", "/predict", body=webp, content_type="image/webp"),
    ]
    events_file = tmp_path / "events.json"
    events_file.write_text(json.dumps(events))
    env = {
        "PYTHONPATH": f"{package.directory}:{lambda_runtime}",  # /var/task:/var/runtime
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MODEL_URI": str(api_registry),
        "WASTESORT_CACHE_DIR": str(tmp_path / "cache"),
        "POWERTOOLS_METRICS_DISABLED": "true",
        "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only on Lambda
    }
    result = subprocess.run(
        [PYTHON, "-S", "-c", CHECK, str(events_file)],  # -S: no site-packages
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tensorflow"] is False
    assert out["paths"] == []  # nothing came from any site-packages
    statuses = [answer["statusCode"] for answer in out["answers"]]
    assert statuses == [200, 200, 200, 200], out["answers"]
    bodies = []
    for answer in out["answers"]:
        body = answer["body"]
        bodies.append(json.loads(base64.b64decode(body) if answer["isBase64Encoded"] else body))
    assert bodies[0]["runtime"]["name"] == "ai-edge-litert"
    assert all(b["model_version"] == "tiny-1" for b in bodies)
    assert out["cold"]["model_loaded"] is True
