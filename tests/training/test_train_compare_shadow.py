"""`python -m training compare --captures`: the comparison carries the shadow report, the same
one `wastesort shadow` prints for the two versions on those photos."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, SAMPLES
from training.__main__ import main
from wastesort import cli

BUNDLED = ROOT / "models"
PREVIOUS = "v20261124-b43ebf72"


def test_compare_with_captures_includes_the_shadow_table(tmp_path: Path, capsys):
    champion, challenger = f"{BUNDLED}@{PREVIOUS}", f"{BUNDLED}@production"
    out = tmp_path / "compare.json"
    args = ["--champion", champion, "--challenger", challenger]
    sources = ["--sources", f"samples={SAMPLES}", "--captures", str(SAMPLES)]
    code = main(["compare", *args, *sources, "--json", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, 3)  # the verdict is not what this test is about
    shadow = json.loads(out.read_text())["shadow"]
    assert cli.main(["shadow", *args, "--captures", str(SAMPLES), "--json"]) == 0
    assert shadow == json.loads(capsys.readouterr().out)
    assert shadow["n"] == 18 and shadow["labelled"] == 18
    assert f"Shadow scoring on `{SAMPLES}`" in printed
    assert f"agreement: {shadow['agreement'] * 100:.1f}%" in printed
