"""Capture's cost on the Lambda handler path, capture off vs on, side by side in one run.

Three warm handler processes (`functions.api.handler.handler`, as Lambda runs it, Mangum
included, so the capture write runs before the handler returns, as on Lambda) answer the same
`POST /predict` event (a 320x240 JPEG, base64, API Gateway HTTP API v2) in interleaved blocks:

- `off`: no `API_CAPTURE_URI`;
- `on, sample 0.02`: the default (every `uncertain` answer and 2 % of the rest are written);
- `on, every request`: `API_CAPTURE_SAMPLE=1`, the worst case: a write per request.

The capture store is S3 served by moto on loopback (`ThreadedMotoServer`, one process in this
benchmark's own, no network): each write is two conditional PUTs with a tag, over HTTP, with the
API's bounded client (1 s timeouts, one attempt). Loopback S3 is faster than real S3 from a
Lambda (a few ms per PUT in-region), so the absolute added time here is a lower bound; the
re-encode (decode, shrink, JPEG) is measured as it is. Reported: p50/p99 per variant and the
p50/p99 added over `off`, in ms and %.

    python -m bench.capture [--rounds N] [--calls N] [--model URI]

Writes `bench/results/capture.json` (and the `capture` part of `serving.json` when run from
`python -m bench.serving`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from typing import Any

from bench.serving import (
    PY,
    ROOT,
    WORK,
    gateway_event,
    moto_s3,
)

BUCKET = "bench-captures"
VARIANTS = {  # name -> extra environment
    "off": {},
    "on, sample 0.02": {"API_CAPTURE_URI": f"s3://{BUCKET}"},
    "on, every request": {"API_CAPTURE_URI": f"s3://{BUCKET}", "API_CAPTURE_SAMPLE": "1"},
}
TARGET = 0.05
"""The issue's target: capture adds at most 5 % at p50 (with the default sample)."""

CHILD = """
import json, sys, time
event = json.load(open(sys.argv[1]))
from functions.api.handler import handler
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    calls = int(line)
    times, captured = [], 0
    for _ in range(calls):
        start = time.perf_counter()
        response = handler(dict(event), None)
        times.append((time.perf_counter() - start) * 1000)
        assert response["statusCode"] == 200, response
        captured += "capture_id" in json.loads(response["body"])
    print(json.dumps({"ms": times, "captured": captured}), flush=True)
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run(model_uri: str, body: bytes, *, rounds: int = 6, calls: int = 50) -> dict[str, Any]:
    """Interleaved blocks of `calls` warm invocations per variant, `rounds` times (the order
    alternates each round), after a warm-up block each."""
    children: dict[str, subprocess.Popen] = {}
    with moto_s3() as (s3, aws):
        try:
            s3.create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
            s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
            WORK.mkdir(parents=True, exist_ok=True)
            event_file = WORK / "capture-event.json"
            event_file.write_text(json.dumps(gateway_event(body)))
            base = {
                **os.environ,
                **aws,
                "MODEL_URI": model_uri,
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "WASTESORT_CACHE_DIR": str(WORK / "capture-cache"),
            }
            for name, extra in VARIANTS.items():
                children[name] = subprocess.Popen(
                    [PY, "-c", CHILD, str(event_file)],
                    cwd=ROOT,
                    env={**base, **extra},
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            for child in children.values():
                assert json.loads(child.stdout.readline())["ready"]
            times: dict[str, list[float]] = {name: [] for name in VARIANTS}
            captured = dict.fromkeys(VARIANTS, 0)
            for block in range(rounds + 1):  # block 0 warms up
                order = list(children) if block % 2 == 0 else list(reversed(children))
                for name in order:
                    child = children[name]
                    child.stdin.write(f"{calls}\n")
                    child.stdin.flush()
                    answer = json.loads(child.stdout.readline())
                    if block:
                        times[name].extend(answer["ms"])
                        captured[name] += answer["captured"]
                if block:
                    print(f"  round {block}/{rounds} done", flush=True)
            stored = sum(
                len(page.get("Contents", []))
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            )
        finally:
            for child in children.values():
                child.kill()
                child.wait()
    off = times["off"]
    p50_off, p99_off = statistics.median(off), _percentile(off, 0.99)
    variants = {}
    for name, values in times.items():
        p50, p99 = statistics.median(values), _percentile(values, 0.99)
        variants[name] = {
            "calls": len(values),
            "captured": captured[name],
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "p50_added_ms": round(p50 - p50_off, 2),
            "p50_added_pct": round((p50 - p50_off) / p50_off * 100, 1),
            "p99_added_ms": round(p99 - p99_off, 2),
            "p99_added_pct": round((p99 - p99_off) / p99_off * 100, 1),
        }
    return {
        "machine": f"{os.cpu_count()} CPUs, shared",
        "model": model_uri,
        "image": f"320x240 JPEG, {len(body)} bytes",
        "store": "S3 on moto's ThreadedMotoServer, loopback (versioned bucket)",
        "rounds": rounds,
        "calls_per_block": calls,
        "objects_stored": stored,
        "target_p50_added_pct": TARGET * 100,
        "variants": variants,
    }
