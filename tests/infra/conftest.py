"""Synthesize the stack once per session; every infra test module reads the same template."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# jsii prints a banner for node versions it no longer supports; it is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20,21,22")

from infra_testlib import MODEL_SHA256, MODEL_VERSION, ROOT


def cdk_json_context() -> dict[str, Any]:
    """The context `cdk.json` gives every synth (stage, package, feature flags)."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


@pytest.fixture(scope="session")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for `make package`'s output: just the handler modules (the drift
    package's too: the context points `drift_package` here as well)."""
    root = tmp_path_factory.mktemp("package")
    for rel in (
        "functions/api/handler.py",
        "functions/hooks/pre_traffic.py",
        "functions/drift/handler.py",
        "functions/bulk/handler.py",
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def handler(event, context):\n    return {}\n")
    return root


@pytest.fixture(scope="session")
def context(package_dir: Path) -> dict[str, Any]:
    """The main test stage: a pinned model, e-mail alarms, defaults for the rest."""
    return {
        **cdk_json_context(),
        "package": str(package_dir),
        "drift_package": str(package_dir),
        "stage": "test",
        "model_version": MODEL_VERSION,
        "model_sha256": MODEL_SHA256,
        "alarm_email": "ops@example.com",
    }


def synth(context: dict[str, Any], outdir: Path) -> dict[str, Any]:
    """Build the app as `cdk synth` does (cdk-nag included) and return the stack's template."""
    from infra.app import build_app

    app, stack = build_app(context, outdir=str(outdir))
    assembly = app.synth()
    return assembly.get_stack_by_name(stack.stack_name).template


@pytest.fixture(scope="session")
def template_json(context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict:
    return synth(context, tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def template(template_json: dict) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(template_json)
