"""Shared values and helpers for the infra tests (a module name no other test dir uses)."""

from __future__ import annotations

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
