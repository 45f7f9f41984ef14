"""cfn-lint on the synthesized template."""

from __future__ import annotations

from pathlib import Path

from infra_testlib import cfn_lint


def test_template_is_cfn_lint_clean(template_json: dict, tmp_path: Path) -> None:
    cfn_lint(template_json, tmp_path)
