"""The bulk batch handler on moto S3: a Distributed Map batch (as `S3ObjectsItemReader` +
`ItemBatcher` deliver it) of good images, a bad one, a missing key and a folder marker becomes one
`to_record` line per object, classified by the tiny model at the version the batch pins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.api.settings import Settings
from functions.bulk import handler as bulk
from functions.bulk.limits import MAX_OBJECT_BYTES, MIB
from tests.conftest import SAMPLES, moto_bucket
from wastesort import Classifier
from wastesort.bulk import to_record

BUCKET = "wastesort-bulk-test"
GOOD = sorted(SAMPLES.glob("*/*.jpg"))[:5]


def item(key: str, size: int | None = 1234) -> dict[str, Any]:
    """One object as S3ObjectsItemReader lists it."""
    return {
        "Etag": '"0123456789abcdef"',
        "Key": key,
        "LastModified": 1764950400,
        "Size": size,
        "StorageClass": "STANDARD",
    }


def batch(keys: list[str], version: str = "tiny-1") -> dict[str, Any]:
    return {
        "Items": [item(k) for k in keys],
        "BatchInput": {"bucket": BUCKET, "model_version": version},
    }


@pytest.fixture
def s3() -> Iterator[Any]:
    """The input bucket with the good images under input/job/ and one file that is no image."""
    with moto_bucket(BUCKET) as client:
        for path in GOOD:
            client.put_object(
                Bucket=BUCKET,
                Key=f"input/job/{path.parent.name}/{path.name}",
                Body=path.read_bytes(),
            )
        client.put_object(Bucket=BUCKET, Key="input/job/notes.txt", Body=b"not an image at all")
        yield client


@pytest.fixture
def runner(registry_dir: Path, s3: Any) -> bulk.BatchRunner:
    return bulk.BatchRunner(Settings(model_uri=f"{registry_dir}@production"), client=s3)


def good_keys() -> list[str]:
    return [f"input/job/{p.parent.name}/{p.name}" for p in GOOD]


def test_every_object_becomes_one_record_in_item_order(
    runner: bulk.BatchRunner, registry_dir: Path
) -> None:
    keys = [*good_keys(), "input/job/notes.txt", "input/job/gone.jpg", "input/job/"]
    result = runner.run(batch(keys))

    assert result["counts"] == {"images": 7, "classified": 5, "failed": 2, "skipped": 1}
    assert result["model_version"] == "tiny-1"
    assert result["ms_per_image"] > 0
    records = result["records"]
    assert [r["path"] for r in records] == [f"s3://{BUCKET}/{k}" for k in keys[:-1]]
    local = Classifier.load(f"{registry_dir}@tiny-1")
    for path, record in zip(GOOD, records, strict=False):
        expected = to_record(record["path"], local.predict(path.read_bytes()))
        assert record == expected  # the same line the local CLI writes
    bad, missing = records[5], records[6]
    assert set(bad) == {"path", "error"}
    assert bad["error"]["code"] in {"unsupported_format", "corrupt_image", "invalid_image"}
    assert missing["error"]["code"] == "not_found"
    assert "gone.jpg" in missing["error"]["message"]
    json.dumps(result)  # what Step Functions receives is plain JSON


def test_an_object_too_large_is_refused_unread(runner: bulk.BatchRunner) -> None:
    event = batch(good_keys()[:1])
    event["Items"].append(item("input/job/huge.jpg", size=MAX_OBJECT_BYTES + 1))
    records = runner.run(event)["records"]
    assert "error" not in records[0]
    assert records[1]["error"]["code"] == "too_large"


def test_the_object_limit_follows_the_functions_memory(
    registry_dir: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 objects of 32 MiB do not fit in 1024 MB: a batch may hold half its memory in objects."""
    settings = Settings(model_uri=f"{registry_dir}@production")
    sized = bulk.BatchRunner(settings, client=s3, memory_mb=1024)
    event = batch(good_keys()[:1] + [f"input/job/absent-{n}.jpg" for n in range(49)])
    event["Items"][1]["Size"] = 11 * MIB  # over 1024 MB / (2 x 50) = 10.24 MiB
    event["Items"][2]["Size"] = 10 * MIB  # under: read (and, being absent, not found)
    records = sized.run(event)["records"]
    assert "error" not in records[0]
    assert records[1]["error"]["code"] == "too_large"
    assert "over 10.2 MiB (a batch of 50 in 1024 MB)" in records[1]["error"]["message"]
    assert records[2]["error"]["code"] == "not_found"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "64")  # as Lambda sets it
    two = batch(good_keys()[:2])
    two["Items"][1]["Size"] = 17 * MIB  # over 64 MB / (2 x 2) = 16 MiB
    records = bulk.BatchRunner(settings, client=s3).run(two)["records"]
    assert "error" not in records[0] and records[1]["error"]["code"] == "too_large"


def test_the_model_is_loaded_once_per_version(runner: bulk.BatchRunner) -> None:
    runner.run(batch(good_keys()[:1]))
    first = runner.classifier("tiny-1")
    runner.run(batch(good_keys()[1:3]))
    assert runner.classifier("tiny-1") is first


def test_an_alias_is_refused_a_job_pins_a_version(runner: bulk.BatchRunner) -> None:
    with pytest.raises(bulk.BatchError, match="alias"):
        runner.run(batch(good_keys()[:1], version="production"))


def test_a_version_that_does_not_load_fails_the_batch_saying_what(
    runner: bulk.BatchRunner, registry_dir: Path
) -> None:
    with pytest.raises(bulk.BatchError, match="no such version") as info:
        runner.run(batch(good_keys()[:1], version="v-missing"))
    assert str(registry_dir) not in str(info.value)  # what failed, never where


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Items": [{"Key": "a.jpg"}]},
        {"Items": [], "BatchInput": {"bucket": BUCKET, "model_version": "../etc"}},
        {"Items": [{"Size": 3}], "BatchInput": {"bucket": BUCKET, "model_version": "tiny-1"}},
    ],
)
def test_a_malformed_event_is_one_clear_error(runner: bulk.BatchRunner, event: dict) -> None:
    with pytest.raises(bulk.BatchError, match="not a Distributed Map batch"):
        runner.run(event)


def test_the_lambda_entry_point_emits_metrics(
    registry_dir: Path,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MODEL_URI", str(registry_dir))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setattr(bulk, "_runner", None)
    result = bulk.handler(batch([*good_keys()[:2], "input/job/gone.jpg"]), None)
    assert result["counts"]["failed"] == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    emf = next(line for line in lines if bulk.METRIC_IMAGES in line)
    names = {m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {bulk.METRIC_IMAGES, bulk.METRIC_FAILED, bulk.METRIC_MS_PER_IMAGE}
    assert emf[bulk.METRIC_IMAGES] in (3, [3])  # Powertools writes a value as a list
    assert emf[bulk.METRIC_FAILED] in (1, [1])
    assert emf["model_version"] == "tiny-1"
    assert emf["service"] == bulk.SERVICE_NAME
