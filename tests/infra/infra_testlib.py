"""Shared values and helpers for the infra tests (a module name no other test dir uses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODEL_VERSION = "v20261123-abc123"
MODEL_SHA256 = "ab" * 32


def only(found: dict[str, Any]) -> dict[str, Any]:
    """The one resource `Template.find_resources` found."""
    assert len(found) == 1, sorted(found)
    return next(iter(found.values()))


def statements(template_json: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to roles whose logical id starts so."""
    found = []
    for resource in template_json["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        roles = [r["Ref"] for r in resource["Properties"]["Roles"]]
        if any(r.startswith(role_prefix) for r in roles):
            found.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    return found


# W3005: CDK adds DependsOn on a function's role next to the GetAtt that already orders them.
IGNORED = "W3005"


def cfn_lint(template_json: dict, tmp_path: Path) -> None:
    """Fail with cfn-lint's findings unless the template is clean."""
    path = tmp_path / "wastesort.template.json"
    path.write_text(json.dumps(template_json))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--ignore-checks",
            IGNORED,
            "--",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
