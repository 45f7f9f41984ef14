"""cfn-lint on the synthesized template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# W3005: CDK adds DependsOn on a function's role next to the GetAtt that already orders them.
IGNORED = "W3005"


def test_template_is_cfn_lint_clean(template_json: dict, tmp_path: Path) -> None:
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
