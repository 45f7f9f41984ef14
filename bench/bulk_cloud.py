"""The bulk batch handler's time per image: what a million images cost on Lambda (docs/ops.md).

python -m bench bulk_cloud  (or python -m bench.bulk_cloud) -> bench/results/bulk_cloud.json

One Distributed Map batch as Step Functions sends it (50 keys by default, the committed
`samples/` repeated) through `functions.bulk.handler.BatchRunner` with the bundled model's
`production` version, the objects on moto S3 in this process: S3 costs no round trip here, so
this is the handler's own work (read, decode, preprocess, one batched invoke, records). The
first batch (model load and warm-up) is left out; the median of the repeats is reported, wall
time and process CPU time (all threads: what Lambda bills when the function has the CPU to
itself), with interpreter threads as on Lambda (the core's default) and with one thread.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from functions.api.observability import logger
from functions.api.settings import Settings
from functions.bulk.handler import BatchRunner
from wastesort.classifier import BUNDLED_REGISTRY
from wastesort.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BUCKET = "wastesort-bench-bulk"


def _event(keys: list[str], version: str) -> dict[str, Any]:
    items = [{"Key": key, "Size": 1, "Etag": '"x"', "StorageClass": "STANDARD"} for key in keys]
    return {"Items": items, "BatchInput": {"bucket": BUCKET, "model_version": version}}


def measure(client: Any, keys: list[str], version: str, threads: int | None, repeats: int) -> dict:
    settings = Settings(model_uri=str(BUNDLED_REGISTRY), num_threads=threads)
    runner = BatchRunner(settings, client=client)
    event = _event(keys, version)
    runner.run(event)  # load + warm-up: once per sandbox, not per image
    per_image, cpu_per_image = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        result = runner.run(event)
        per_image.append((time.perf_counter() - started) * 1000 / len(keys))
        cpu_per_image.append((time.process_time() - cpu) * 1000 / len(keys))
        assert result["counts"]["failed"] == 0, result["counts"]
    return {
        "threads": threads or "default",
        "images_per_batch": len(keys),
        "repeats": repeats,
        "ms_per_image_p50": round(statistics.median(per_image), 2),
        "ms_per_image_min": round(min(per_image), 2),
        "ms_per_image_max": round(max(per_image), 2),
        "cpu_ms_per_image_p50": round(statistics.median(cpu_per_image), 2),
    }


def run(batch: int = 50, repeats: int = 15) -> dict:
    import boto3
    from moto import mock_aws

    logger.setLevel("WARNING")  # one "bulk batch" line per batch is noise in a table
    version = Registry.from_uri(BUNDLED_REGISTRY).resolve("production").version
    samples = sorted((ROOT / "samples").glob("*/*.jpg"))
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        keys = []
        for i, path in zip(range(batch), itertools.cycle(samples), strict=False):
            key = f"input/bench/{i:03d}-{path.name}"
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
            keys.append(key)
        rows = [measure(client, keys, version, threads, repeats) for threads in (None, 1)]
    return {"model_version": version, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    result = run()
    print(f"bulk batch handler, bundled model {result['model_version']}, moto S3 in-process")
    print("| interpreter threads | images/batch | wall ms/image p50 | min | max | CPU ms/image |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in result["rows"]:
        print(
            f"| {row['threads']} | {row['images_per_batch']} | {row['ms_per_image_p50']} "
            f"| {row['ms_per_image_min']} | {row['ms_per_image_max']} "
            f"| {row['cpu_ms_per_image_p50']} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bulk_cloud.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
