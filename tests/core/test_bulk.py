"""Bulk classification: items from folders and S3, the worker pool, resumable results."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, moto_bucket, sample_bytes, tiny_fields
from wastesort import cli as wastesort_cli
from wastesort.bulk import classify_many, list_items, parse_s3, read_done
from wastesort.errors import ModelError, WastesortError
from wastesort.registry import GoldenSample, Registry

BUCKET = "wastesort-test-bulk"
ALL_SAMPLES = sorted(str(p) for p in SAMPLES.rglob("*.jpg"))


def test_parse_s3_keeps_the_double_slash_meaning():
    assert parse_s3("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3("s3://bucket") == ("bucket", "")
    for bad in ("s3://", "s3:///key", "s3:/bucket/key"):
        with pytest.raises(WastesortError, match="names no bucket") as caught:
            parse_s3(bad)
        assert caught.value.code == "usage"


def test_list_items_walks_folders_sorted_images_only_each_once(tmp_path: Path):
    folder = tmp_path / "imgs"
    shutil.copytree(SAMPLES / "glass", folder / "b")
    shutil.copytree(SAMPLES / "metal", folder / "a")
    (folder / "notes.txt").write_text("not an image")
    one = sorted((folder / "b").glob("*.jpg"))[0]
    items = list_items([str(folder), str(one)])
    assert items == sorted(str(p) for p in folder.rglob("*.jpg"))  # `one` only once
    assert list_items([str(one)]) == [str(one)]
    with pytest.raises(WastesortError, match="no such file or folder") as caught:
        list_items([str(tmp_path / "missing")])
    assert caught.value.code == "usage"
    with pytest.raises(WastesortError, match="starts with s3://"):
        list_items(["s3:/bucket/key"])  # what a Path makes of s3://bucket/key


def test_workers_give_the_records_of_the_in_process_run(registry_dir: Path):
    items = ALL_SAMPLES * 3  # enough for several chunks on each of two workers
    alone = list(classify_many(str(registry_dir), items, workers=1, top_k=3))
    pooled = list(classify_many(str(registry_dir), items, workers=2, top_k=3))
    assert [r["path"] for r in pooled] == items
    assert pooled == alone
    assert {r["model_version"] for r in pooled} == {"tiny-1"}  # the alias, pinned
    assert all(len(r["all_confidences"]) == 3 for r in pooled)


def test_a_loaded_classifier_runs_in_process_and_cannot_go_with_workers(registry_dir: Path):
    from wastesort import Classifier

    loaded = Classifier.load(str(registry_dir))
    items = ALL_SAMPLES[:4]
    assert list(classify_many(loaded, items)) == list(classify_many(str(registry_dir), items))
    with pytest.raises(ValueError, match="give its URI"):
        next(classify_many(loaded, items, workers=2))


def test_bad_and_missing_items_become_error_records(registry_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    items = [ALL_SAMPLES[0], str(broken), str(tmp_path / "gone.jpg")]
    for workers in (1, 2):
        records = list(classify_many(str(registry_dir), items, workers=workers))
        assert [r["path"] for r in records] == items
        assert "predicted_class" in records[0]
        assert records[1]["error"]["code"] in {"corrupt_image", "unsupported_format"}
        assert records[2]["error"]["code"] == "unreadable"


def test_a_bad_model_fails_before_any_item(tmp_path: Path):
    for workers in (1, 2):
        with pytest.raises(ModelError, match="no model file"):
            next(classify_many(str(tmp_path / "nothing.tflite"), ALL_SAMPLES, workers=workers))


def test_an_s3_prefix_on_moto(registry_dir: Path):
    with moto_bucket(BUCKET) as s3:
        for path in ALL_SAMPLES[:5]:
            s3.put_object(
                Bucket=BUCKET, Key=f"season/{Path(path).name}", Body=Path(path).read_bytes()
            )
        s3.put_object(Bucket=BUCKET, Key="season/readme.txt", Body=b"text")
        s3.put_object(Bucket=BUCKET, Key="season2/x.jpg", Body=b"not under season/")
        s3.put_object(Bucket=BUCKET, Key="season/broken.jpg", Body=b"\xff\xd8 nope")
        items = list_items([f"s3://{BUCKET}/season/"])
        assert items == list_items([f"s3://{BUCKET}/season"])  # the slash is optional
        names = sorted(["broken.jpg", *(Path(p).name for p in ALL_SAMPLES[:5])])
        assert items == [f"s3://{BUCKET}/season/{n}" for n in names]
        missing = f"s3://{BUCKET}/season/gone.jpg"
        records = list(classify_many(str(registry_dir), [*items, missing]))
    by_path = {r["path"]: r for r in records}
    local = list(classify_many(str(registry_dir), ALL_SAMPLES[:5]))
    for record in local:
        remote = by_path[f"s3://{BUCKET}/season/{Path(record['path']).name}"]
        assert remote["all_confidences"] == record["all_confidences"]
    assert by_path[f"s3://{BUCKET}/season/broken.jpg"]["error"]["code"] in {
        "corrupt_image",
        "unsupported_format",
    }
    assert by_path[missing]["error"]["code"] == "not_found"


def test_read_done_cuts_a_torn_last_line(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    assert read_done(out) == ({}, None)
    good = [
        {"path": "a.jpg", "decision": "glass", "model_version": "v1"},
        {"path": "b.jpg", "error": {"code": "x"}},
    ]
    text = "".join(json.dumps(r) + "\n" for r in good)
    out.write_text(text + '{"path": "c.jp')
    assert read_done(out) == ({"a.jpg": False, "b.jpg": True}, "v1")
    assert out.read_text() == text  # appending now starts on a fresh line
    out.write_text(text + "garbage\n" + text)
    with pytest.raises(WastesortError, match="line 3 is not a record"):
        read_done(out)


def test_read_done_a_later_line_for_a_path_wins_and_one_version_only(tmp_path: Path):
    out = tmp_path / "out.jsonl"
    lines = [
        {"path": "a.jpg", "error": {"code": "unreadable"}},
        {"path": "a.jpg", "decision": "glass", "model_version": "v1"},
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert read_done(out) == ({"a.jpg": False}, "v1")
    with out.open("a") as file:
        file.write(json.dumps({"path": "b.jpg", "model_version": "v2"}) + "\n")
    with pytest.raises(WastesortError, match="mixes models v1, v2"):
        read_done(out)


# --- the command line -------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wastesort", "classify", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )


def folder_of(tmp_path: Path, copies: int) -> Path:
    """`copies` hard links of every sample under one folder (cheap, real JPEGs)."""
    folder = tmp_path / "imgs"
    for n in range(copies):
        for path in ALL_SAMPLES:
            target = folder / f"{n:03d}" / Path(path).parent.name / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    return folder


def lines_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_cli_workers_and_out_match_the_in_process_run(registry_dir: Path, tmp_path: Path):
    folder = folder_of(tmp_path, 2)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    model = ["--model", str(registry_dir)]
    alone = cli(str(folder), *model, "--json", "--workers", "1")
    assert alone.returncode == 1
    out = tmp_path / "out.jsonl"
    pooled = cli(str(folder), *model, "--workers", "2", "--out", str(out))
    assert (pooled.returncode, pooled.stdout) == (1, "")
    assert lines_of(out) == [json.loads(line) for line in alone.stdout.splitlines()]
    bad = [r for r in lines_of(out) if "error" in r]
    assert [r["path"] for r in bad] == [str(folder / "broken.jpg")]
    assert f"1 of {2 * len(ALL_SAMPLES) + 1} images failed" in pooled.stderr
    assert "Traceback" not in pooled.stderr
    again = cli(str(folder), *model, "--workers", "2", "--out", str(out))
    assert again.returncode == 1  # the file still holds a failed image
    assert "0 images classified" in again.stderr
    assert len(lines_of(out)) == 2 * len(ALL_SAMPLES) + 1  # nothing redone


def classify_main(*args: str) -> int:
    """The CLI in this process (small runs classify in-process: no worker pool)."""
    return wastesort_cli.main(["classify", *args])


def test_resume_refuses_another_model_version(
    registry_dir: Path, tiny_int8: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    registry = Registry.from_uri(registry_dir, cache_dir=tmp_path / "cache")
    golden = [GoldenSample("glass.jpg", sample_bytes("glass"), "glass")]
    registry.publish(tiny_int8, version="tiny-2", golden=golden, **tiny_fields())
    out = tmp_path / "out.jsonl"
    images = ALL_SAMPLES[:2]
    assert classify_main(*images, "--model", str(registry_dir), "--out", str(out)) == 0
    before = out.read_bytes()
    capsys.readouterr()
    registry.promote("production", "tiny-2", force=True)  # the alias moves after the first run
    for model in (f"{registry_dir}@tiny-2", str(registry_dir)):  # another --model, the alias
        assert classify_main(*images, "--model", model, "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "model tiny-1 but this run's model is tiny-2; use another --out" in err
    assert out.read_bytes() == before  # nothing appended
    assert classify_main(*images, "--model", f"{registry_dir}@tiny-1", "--out", str(out)) == 0
    assert out.read_bytes() == before  # the same version resumes: nothing to redo


def test_retry_failed_redoes_error_records_and_the_later_line_wins(
    registry_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(ALL_SAMPLES[0], folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not yet a jpeg")
    out = tmp_path / "out.jsonl"
    model = ["--model", str(registry_dir), "--out", str(out)]
    assert classify_main(str(folder), *model) == 1
    assert classify_main(str(folder), *model) == 1  # a plain re-run keeps the failure
    assert len(lines_of(out)) == 2
    shutil.copy(ALL_SAMPLES[1], folder / "b.jpg")  # fixed at the source
    capsys.readouterr()
    assert classify_main(str(folder), *model, "--retry-failed") == 0
    assert "1 images classified" in capsys.readouterr().err
    records = lines_of(out)
    assert [r["path"] for r in records] == [str(folder / n) for n in ("a.jpg", "b.jpg", "b.jpg")]
    assert "error" in records[1] and "predicted_class" in records[2]
    assert read_done(out).errors == {str(folder / "a.jpg"): False, str(folder / "b.jpg"): False}
    assert classify_main(str(folder), *model, "--retry-failed") == 0  # nothing left to redo
    assert len(lines_of(out)) == 3


def test_retry_failed_needs_out(registry_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert classify_main(ALL_SAMPLES[0], "--model", str(registry_dir), "--retry-failed") == 2
    assert "--retry-failed needs --out" in capsys.readouterr().err


def live_in_group(group: int) -> list[int]:
    """Processes (not zombies) in a process group, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group and fields[0] != "Z":
                alive.append(int(stat.parent.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_resume_after_a_kill_classifies_each_path_once(registry_dir: Path, tmp_path: Path):
    folder = folder_of(tmp_path, 60)  # ~1,000 images: seconds of work, killed early
    out = tmp_path / "out.jsonl"
    args = ["classify", str(folder), "--model", str(registry_dir), "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wastesort", *args, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n") >= 20):
            assert proc.poll() is None and time.monotonic() < deadline, "never wrote records"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20  # orphaned workers notice and exit
        while live_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_in_group(proc.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    total = len(list_items([str(folder)]))
    written = out.read_bytes()
    assert 20 <= written.count(b"\n") < total  # killed mid-run
    if written.endswith(b"\n"):  # tear the last line as a kill mid-write would
        out.write_bytes(written + b'{"path": "' + str(folder).encode())
    resumed = cli(str(folder), "--model", str(registry_dir), "--workers", "2", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    records = lines_of(out)
    paths = [r["path"] for r in records]
    assert sorted(paths) == sorted(list_items([str(folder)]))  # each path exactly once
    assert all("predicted_class" in r for r in records)


def test_cli_on_an_s3_prefix_with_workers(registry_dir: Path, tmp_path: Path):
    """Workers are other processes: S3 here is moto's server on loopback."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
    }
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=aws["AWS_ENDPOINT_URL_S3"],
            region_name="eu-west-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        keys = [f"in/{Path(p).parent.name}/{Path(p).name}" for p in ALL_SAMPLES]
        for key, path in zip(keys, ALL_SAMPLES, strict=True):
            s3.put_object(Bucket=BUCKET, Key=key, Body=Path(path).read_bytes())
        out = tmp_path / "out.jsonl"
        args = [f"s3://{BUCKET}/in/", "--model", str(registry_dir), "--out", str(out)]
        result = subprocess.run(
            [sys.executable, "-m", "wastesort", "classify", *args, "--workers", "2"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=300,
            env={**os.environ, **aws},
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    records = lines_of(out)
    assert [r["path"] for r in records] == sorted(f"s3://{BUCKET}/{k}" for k in keys)
    local = {Path(r["path"]).name: r for r in classify_many(str(registry_dir), ALL_SAMPLES)}
    for record in records:
        assert record["all_confidences"] == local[Path(record["path"]).name]["all_confidences"]


def test_default_workers_never_exceed_cores_or_what_the_run_pays_for():
    from wastesort.classify_cli import IMAGES_PER_WORKER, default_workers

    assert default_workers(0) == default_workers(IMAGES_PER_WORKER - 1) == 1
    assert default_workers(10**6) == len(os.sched_getaffinity(0))
