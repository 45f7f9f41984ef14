"""The GitHub workflows: valid against the workflow schema, and running what .ci/run runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from infra_testlib import ROOT

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def test_workflows_match_the_github_schema() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "deploy.yml"}
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
        + [str(p) for p in WORKFLOWS],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _runs(name: str) -> list[str]:
    workflow = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
    return [s["run"] for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]


def test_ci_runs_ci_run_then_package_and_synth() -> None:
    runs = _runs("ci.yml")
    assert runs[0] == "./.ci/run"
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "make package" in runs
    assert any(r.startswith("make synth") for r in runs)


@pytest.mark.parametrize(("job", "stage"), [("staging", "staging"), ("production", "prod")])
def test_deploy_assumes_a_role_through_oidc_per_environment(job: str, stage: str) -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    spec = workflow["jobs"][job]
    assert spec["permissions"]["id-token"] == "write"
    assert spec["environment"] == job
    aws = next(s for s in spec["steps"] if s.get("uses", "").startswith("aws-actions/"))
    assert aws["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    deploy = next(s["run"] for s in spec["steps"] if "make deploy" in s.get("run", ""))
    assert f"STAGE={stage}" in deploy


def test_production_waits_for_staging() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    assert workflow["jobs"]["production"]["needs"] == "staging"
