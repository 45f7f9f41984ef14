from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLES

CONTRACT = {"path", "predicted_class", "confidence", "all_confidences", "decision", "model_version"}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wastesort", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env=env,
    )


def test_classify_folder_json_one_object_per_image(registry_dir: Path):
    result = cli("classify", str(SAMPLES / "glass"), "--model", str(registry_dir), "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == sorted(str(p) for p in (SAMPLES / "glass").glob("*.jpg"))
    assert all(set(r) == CONTRACT for r in rows)
    assert {r["model_version"] for r in rows} == {"tiny-1"}


def test_human_table_and_top_k(registry_dir: Path):
    result = cli("classify", str(SAMPLES / "metal"), "--model", f"{registry_dir}@production")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == ["path", "class", "confidence", "decision"]
    assert len(result.stdout.splitlines()) == 4
    one = cli(
        "classify", str(SAMPLES / "metal"), "--model", str(registry_dir), "--json", "--top-k", "2"
    )
    assert all(len(json.loads(line)["all_confidences"]) == 2 for line in one.stdout.splitlines())


def test_folder_with_one_bad_image_reports_it_and_goes_on(registry_dir: Path, tmp_path: Path):
    folder = tmp_path / "imgs"
    shutil.copytree(SAMPLES / "paper", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = cli("classify", str(folder), "--model", str(registry_dir), "--json")
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 4
    bad = [r for r in rows if "error" in r]
    assert [r["path"] for r in bad] == [str(folder / "broken.jpg")]
    assert bad[0]["error"]["code"] in {"corrupt_image", "unsupported_format"}
    assert "1 of 4 images failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_path_or_bucket_is_a_usage_error(registry_dir: Path):
    """A typo on the command line stops the run before any work (one line, exit 2)."""
    for source, message in (
        ("no/such/file.jpg", "wastesort: error: no/such/file.jpg: no such file or folder"),
        ("s3://", "wastesort: error: 's3://' names no bucket (expected s3://bucket/prefix/)"),
    ):
        result = cli("classify", source, str(SAMPLES / "trash"), "--model", str(registry_dir))
        assert (result.returncode, result.stderr.strip(), result.stdout) == (2, message, "")
    for out in (registry_dir, registry_dir / "no" / "such.jsonl"):  # a folder; no folder
        result = cli("classify", str(SAMPLES / "trash"), "--out", str(out))
        assert result.returncode == 2
        assert result.stderr.startswith(f"wastesort: error: cannot write {out}: ")
        assert "Traceback" not in result.stderr
    if Path("/dev/full").exists():  # a disk that fills up mid-run: one line, not a traceback
        full = cli(
            "classify", str(SAMPLES / "trash"), "--model", str(registry_dir), "--out", "/dev/full"
        )
        assert full.returncode == 2
        assert full.stderr.strip().endswith("cannot write /dev/full: No space left on device")


def test_unknown_model_version(registry_dir: Path):
    result = cli("classify", str(SAMPLES), "--model", f"{registry_dir}@v404")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("wastesort: error: 'v404' is neither an alias")
    assert "Traceback" not in result.stderr


def test_missing_model_and_usage_errors(tmp_path: Path):
    result = cli("classify", str(SAMPLES), "--model", str(tmp_path / "nothing.tflite"))
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"wastesort: error: no model file at {tmp_path / 'nothing.tflite'}",
    )
    assert cli("classify").returncode == 2
    assert cli("classify", "x.jpg", "--top-k", "0").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_registry_commands(registry_dir: Path, tiny_int8: Path):
    from tests.conftest import tiny_fields
    from wastesort.registry import Registry

    Registry.from_uri(registry_dir).publish(tiny_int8, version="tiny-2", **tiny_fields())
    reg = ["registry", "--registry", str(registry_dir)]
    listing = cli(*reg, "--json", "list")
    rows = json.loads(listing.stdout)
    assert [(r["version"], r["aliases"]) for r in rows] == [
        ("tiny-1", ["production"]),
        ("tiny-2", []),
    ]
    assert "tiny-1" in cli(*reg, "list").stdout

    assert cli(*reg, "promote", "production", "tiny-2", "--reason", "test").returncode == 0
    assert json.loads(cli(*reg, "show").stdout)["version"] == "tiny-2"
    rolled = cli(*reg, "rollback", "production")
    assert rolled.stdout.strip() == "production -> tiny-1 (rolled back)"
    history = json.loads(cli(*reg, "--json", "history", "production").stdout)
    assert [(h["action"], h["to_version"]) for h in history] == [
        ("promote", "tiny-1"),
        ("promote", "tiny-2"),
        ("rollback", "tiny-1"),
    ]
    bad = cli(*reg, "promote", "production", "nope")
    assert bad.returncode == 2 and "unknown model version 'nope'" in bad.stderr
    for alias in ("prod/eu", ""):  # could never be resolved from a model URI
        bad = cli(*reg, "promote", alias, "tiny-2")
        assert bad.returncode == 2 and "alias names use" in bad.stderr


def test_registry_list_of_the_bundled_model():
    rows = json.loads(cli("registry", "--json", "list").stdout)
    production = [r for r in rows if "production" in r["aliases"]]
    assert len(production) == 1
    assert 0.85 < production[0]["accuracy"] <= 1
    assert 0.85 < production[0]["macro_f1"] <= 1


def test_keygen_writes_a_usable_pair(tmp_path: Path):
    result = cli("registry", "keygen", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "keys" / "signing.pem").stat().st_mode & 0o077 == 0
    assert cli("registry", "keygen", str(tmp_path / "keys")).returncode == 2  # never overwrites
    taken = cli("registry", "keygen", str(tmp_path / "keys" / "signing.pem"))  # a file
    assert taken.returncode == 2 and "cannot make the folder" in taken.stderr
    assert "Traceback" not in taken.stderr


def test_console_script(registry_dir: Path):
    script = Path(sys.executable).parent / "wastesort"  # installed by `pip install -e .`
    result = subprocess.run(
        [str(script), "classify", str(SAMPLES / "glass"), "--model", str(registry_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0


def test_progress_bar_on_a_terminal_only(registry_dir: Path):
    import os
    import pty

    master, slave = pty.openpty()
    args = [
        sys.executable,
        "-m",
        "wastesort",
        "classify",
        str(SAMPLES),
        "--model",
        str(registry_dir),
    ]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT) as proc:
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"classifying" in seen  # the bar went to the terminal
    assert b"/18" in seen and b"ETA" in seen  # with its count and time left
    assert len(out.splitlines()) == 1 + 18  # stdout kept clean: header + one row per image
    assert "classifying" not in cli("classify", str(SAMPLES), "--model", str(registry_dir)).stderr
