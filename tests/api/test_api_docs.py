"""docs/api.md cannot rot: its curl lines, the Python and JavaScript client files run against
the app served on loopback by the launcher `make serve` runs, and every problem type and
setting it must list is listed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from functions.api import server as launcher
from functions.api.app import create_app
from functions.api.problems import KINDS, type_uri
from functions.api.settings import Settings
from tests.api.conftest import make_settings
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "api.md").read_text()
EXAMPLES = ROOT / "docs" / "examples"


@pytest.fixture(scope="module")
def live_url(api_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on 127.0.0.1 through the launcher `make serve` runs (functions.api.server),
    loading the model in its lifespan, with capture on (the `/feedback` example needs it)."""
    captures = tmp_path_factory.mktemp("captures")
    settings = make_settings(model_uri=str(api_registry), capture_uri=str(captures))
    app = create_app(settings)  # load_on_startup: the lifespan loads MODEL_URI
    with launcher.serving(app) as url:
        yield url


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a documented client example from the repository root."""
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_health_and_docs_over_real_http(live_url: str):
    with httpx.Client(base_url=live_url) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["model_version"] == "tiny-1"
        assert "swagger" in http.get("/docs").text.lower()
        assert http.get("/openapi.json").json()["info"]["title"] == "wastesort"


def test_python_client_example(live_url: str):
    client_module = load_module(EXAMPLES / "client.py")
    glass = ROOT / "samples/glass/glass6.jpg"
    with httpx.Client(base_url=live_url) as http:
        answer = client_module.classify(http, glass, top_k=2)
        assert answer["model_version"] == "tiny-1" and len(answer["all_confidences"]) == 2
        results = client_module.classify_batch(http, [glass, ROOT / "samples/metal/metal6.jpg"])
        assert [r["status"] for r in results] == [200, 200]
        bad = ROOT / "samples/LICENSE"
        with pytest.raises(client_module.ProblemError) as caught:
            client_module.classify(http, bad)
        assert caught.value.problem["type"].endswith("/not-an-image")
    run = example(
        sys.executable,
        str(EXAMPLES / "client.py"),
        "--url",
        live_url,
        "--batch",
        "samples/glass/glass6.jpg",
        "samples/paper/paper8.jpg",
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["status"] for line in lines] == [200, 200]


def curl_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_examples(live_url: str):
    lines = curl_lines()
    assert len(lines) >= 3
    for line in lines:
        run = example("bash", "-c", line, env={**os.environ, "API": live_url})
        assert run.returncode == 0, (line, run.stdout, run.stderr)
        assert {"model_version", "results", "capture_id"} & set(json.loads(run.stdout)), line


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_client_example(live_url: str):
    run = example("node", str(EXAMPLES / "client.mjs"), live_url, "samples/glass/glass6.jpg")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["model_version"] == "tiny-1"


def test_every_problem_type_is_documented():
    for kind in KINDS:
        assert f"`{type_uri(kind)}`" in DOC, kind


def test_every_setting_is_documented():
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if alias is not None else f"API_{name.upper()}"
        assert env in DOC, env


def test_documented_defaults_are_the_codes():
    """A number in the configuration table is the setting's default, not a stale copy."""
    rows = dict(re.findall(r"^\| `(API_[A-Z_]+)` \| (\d+) \|", DOC, flags=re.MULTILINE))
    assert "API_MAX_BODY_BYTES" in rows
    limit = Settings.model_fields["max_body_bytes"].default
    assert f"capped at `API_MAX_BODY_BYTES` ({limit // 2**20} MiB" in " ".join(DOC.split())
    for name, field in Settings.model_fields.items():
        env = f"API_{name.upper()}"
        if env in rows:
            assert int(rows[env]) == field.get_default(call_default_factory=True), env
