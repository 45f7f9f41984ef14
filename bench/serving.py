"""Serving benchmarks, side by side in one run (medians of interleaved repetitions):

1. HTTP on loopback: req/s and p50/p99 of `POST /predict` with a real 240x320 JPEG at 8 and
   32 concurrent keep-alive clients, for the API (uvicorn, one process) with several
   interpreter-pool settings, and for `bench.keras_baseline_app` (the same model in Keras,
   `model.predict` per request, the common way).
2. Cold start: process start to the first answer through the Lambda handler, model on S3
   (a moto server on loopback), fresh cache: the API from the venv and from the pruned
   package, the same handler on TensorFlow's `tf.lite`, and the Keras baseline's handler.
3. Package size unzipped: pruned vs unpruned vs the same package built on TensorFlow.
4. Overload (`bench.overload`): 1/8/32/64 clients, with and without the limit in flight.
5. Memory (`bench.memory`): peak RSS for one 39.7 MP RGBA PNG, today's code and the code before.
6. Capture (`bench.capture`): the Lambda handler's p50/p99 with capture off and on (S3 on moto).

    python -m bench.serving [--model URI --keras PATH] [--quick]

Without `--model` it uses a stand-in built by `bench.serving_model` (the production
architecture with random weights) so the numbers exist before the real model does.
The load generator is a small asyncio HTTP/1.1 client (raw streams, no parsing library), so
the client costs little of the 2 shared cores; it only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "build" / "bench-serving"
PY = sys.executable

POOLS = {  # name -> (API_POOL_SIZE, API_NUM_THREADS)
    "pool=1 x2 threads": (1, 2),
    "pool=2 x1 thread": (2, 1),
    "pool=2 x2 threads": (2, 2),
    "per-thread (40) x1": (40, 1),
}
DEFAULT_POOL = "pool=1 x2 threads"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_jpeg() -> bytes:
    """A real photo (a sample) at 320x240, JPEG quality 90."""
    source = sorted((ROOT / "samples" / "glass").glob("*.jpg"))[0]
    image = Image.open(source).convert("RGB").resize((320, 240), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def ensure_standin() -> tuple[str, Path]:
    out = WORK / "standin"
    if not (out / "registry" / "manifest.json").exists():
        print("building the stand-in model (bench.serving_model) ...", flush=True)
        subprocess.run(
            [PY, "-m", "bench.serving_model", str(out)],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return str(out / "registry"), out / "model.keras"


def save_part(name: str, value: Any) -> None:
    """Write one part of the results into bench/results/serving.json, keeping the others (for
    the parts that also run alone: `python -m bench.overload`, `python -m bench.memory`)."""
    path = RESULTS / "serving.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result[name] = value
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path} ({name})")


# --- 1. HTTP under load ----------------------------------------------------------------------


@contextlib.contextmanager
def server(app: str | None, env: dict[str, str]) -> Iterator[int]:
    """One server process on a free loopback port: the API through its launcher
    (`python -m functions.api.server`, as `make serve` runs it) when `app` is None, else uvicorn
    serving `app` (e.g. `bench.keras_baseline_app:app`); yields the port."""
    port = free_port()
    if app is None:
        command = [PY, "-m", "functions.api.server"]  # loopback by default
    else:
        command = [PY, "-m", "uvicorn", *app.split(), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not become healthy")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def load(
    port: int, body: bytes, *, clients: int, seconds: float, max_requests: int
) -> dict[str, Any]:
    """`clients` keep-alive connections posting `body` back to back for `seconds`."""
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    sent = 0

    async def client() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                start = time.perf_counter()
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - start) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "statuses": statuses,
    }


def http_bench(
    model_uri: str, keras_path: Path, body: bytes, *, reps: int, seconds: float
) -> dict[str, Any]:
    cache = tempfile.mkdtemp(prefix="bench-serving-")
    targets: dict[str, tuple[str | None, dict[str, str]]] = {
        name: (
            None,  # the API's launcher, as `make serve` runs it
            {
                "MODEL_URI": model_uri,
                "WASTESORT_CACHE_DIR": cache,
                "API_POOL_SIZE": str(pool),
                "API_NUM_THREADS": str(threads),
                # The interpreters alone, every request queued as before the limit in flight
                # (so all answers are 200); bench.overload measures the limit.
                "API_MAX_IN_FLIGHT": "0",
            },
        )
        for name, (pool, threads) in POOLS.items()
    }
    targets["keras model.predict"] = (
        "bench.keras_baseline_app:app",
        {"KERAS_MODEL": str(keras_path)},
    )
    runs: dict[str, dict[int, list[dict]]] = {name: {8: [], 32: []} for name in targets}
    with contextlib.ExitStack() as stack:
        ports = {
            name: stack.enter_context(server(app, env)) for name, (app, env) in targets.items()
        }
        for clients in (8, 32):
            for port in ports.values():  # warm-up at this concurrency
                asyncio.run(load(port, body, clients=clients, seconds=1.0, max_requests=64))
            for rep in range(reps):
                order = list(ports) if rep % 2 == 0 else list(reversed(ports))
                for name in order:
                    result = asyncio.run(
                        load(
                            ports[name], body, clients=clients, seconds=seconds, max_requests=20_000
                        )
                    )
                    runs[name][clients].append(result)
                    print(
                        f"  {name:<22} c={clients:<2} rep {rep + 1}: "
                        f"{result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f} ms  "
                        f"p99 {result['p99_ms']:7.1f} ms",
                        flush=True,
                    )
    summary: dict[str, Any] = {}
    for name, by_clients in runs.items():
        summary[name] = {
            str(c): {
                key: round(statistics.median(r[key] for r in results), 2)
                for key in ("rps", "p50_ms", "p99_ms")
            }
            | {
                "requests": sum(r["requests"] for r in results),
                "non_200": sum(n for r in results for s, n in r["statuses"].items() if s != 200),
            }
            for c, results in by_clients.items()
        }
    return summary


# --- 2. cold start ---------------------------------------------------------------------------

CHILD = """
import json, os, sys, time
if os.environ.get("BENCH_TF_LITE"):
    # The baseline: the same handler on TensorFlow's tf.lite interpreter, which the serving
    # core never imports; hand it to the core as its only runtime.
    import tensorflow as tf
    import wastesort.runtime
    wastesort.runtime._CANDIDATES = (("tensorflow", "tensorflow.lite"),)
    sys.modules["tensorflow.lite"] = tf.lite
event = json.load(open(sys.argv[2]))
module = __import__(sys.argv[1], fromlist=["handler"])
response = module.handler(event, None)
print(json.dumps({"t": time.time(), "status": response["statusCode"],
                  "phases": getattr(module, "COLD_START", None)}))
"""


BASELINE_REV = "ad63269"
"""The serving code before this round's hardening: its handler is timed beside today's."""


def _baseline_tree() -> Path | None:
    """A detached worktree of BASELINE_REV under build/, made once; None outside git."""
    tree = WORK / f"baseline-{BASELINE_REV}"
    if (tree / "functions" / "api" / "handler.py").exists():
        return tree
    made = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), BASELINE_REV],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        print(f"  no baseline worktree ({made.stderr.strip()[:200]})", flush=True)
        return None
    return tree


def _runtime_dir() -> Path:
    """What the Lambda runtime provides beside the package: boto3 and its dependencies."""
    out = WORK / "lambda-runtime"
    out.mkdir(parents=True, exist_ok=True)
    import boto3

    site = Path(boto3.__file__).parent.parent
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"):
        link = out / name
        if not link.exists():
            link.symlink_to(site / name)
    return out


def gateway_event(body: bytes) -> dict[str, Any]:
    """An API Gateway (HTTP API, v2) `POST /predict` with a JPEG body, as Lambda hands it over."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": "image/jpeg"},
        "requestContext": {
            "http": {
                "method": "POST",
                "path": "/predict",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "bench",
            },
            "requestId": "bench",
            "stage": "$default",
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


@contextlib.contextmanager
def moto_s3() -> Iterator[tuple[Any, dict[str, str]]]:
    """A moto S3 server on loopback for child processes: (a client, the environment a child
    needs to reach it). Stopped on exit."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="eu-west-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        yield client, aws
    finally:
        moto.stop()


def cold_start(
    model_registry: str, keras_path: Path, body: bytes, *, reps: int, package_dir: Path
) -> dict[str, Any]:
    from wastesort.registry import Registry
    from wastesort.registry.s3 import S3Store

    with moto_s3() as (s3, aws):
        s3.create_bucket(
            Bucket="bench", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        local = Registry.from_uri(model_registry)
        entry = local.resolve()
        remote = Registry(S3Store("s3://bench/models", client=s3), cache_dir=WORK / "pub")
        fields = entry.model_dump(
            exclude={
                "version",
                "artifact",
                "golden_set",
                "extra_artifacts",
                "signature",
                "created_at",
            }
        )
        remote.publish(local.fetch(entry), version=entry.version, aliases=["production"], **fields)
        s3.upload_file(str(keras_path), "bench", "keras/model.keras")
        event = gateway_event(body)
        event_file = WORK / "cold-event.json"
        event_file.write_text(json.dumps(event))
        api_env = {
            **aws,
            "MODEL_URI": "s3://bench/models@production",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        runtime = _runtime_dir()
        baseline = _baseline_tree()
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            "API, ai-edge-litert (venv)": ([PY], api_env),
            **(
                {
                    f"API at {BASELINE_REV}, before hardening (venv)": (
                        [PY],
                        {**api_env, "CWD": str(baseline)},
                    )
                }
                if baseline is not None
                else {}
            ),
            "API, ai-edge-litert (pruned package, no site)": (
                [sys._base_executable, "-S"],
                {**api_env, "PYTHONPATH": f"{package_dir}:{runtime}"},
            ),
            "API, ai-edge-litert (pruned package, no .pyc)": (
                [sys._base_executable, "-S"],
                {**api_env, "PYTHONPATH": f"{package_dir}:{runtime}", "NO_PYC": "1"},
            ),
            "API, same handler on tf.lite": (
                [PY],
                {
                    **api_env,
                    "TF_CPP_MIN_LOG_LEVEL": "3",
                    "BENCH_TF_LITE": "1",
                },
            ),
            "Keras baseline handler": (
                [PY],
                {**aws, "KERAS_MODEL": "s3://bench/keras/model.keras"},
            ),
        }
        modules = {
            name: "bench.keras_baseline_app" if "Keras" in name else "functions.api.handler"
            for name in variants
        }
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for rep in range(reps):
            for name, (command, env) in variants.items():
                with tempfile.TemporaryDirectory() as tmp:  # a fresh /tmp: download again
                    child_env = {
                        "PATH": os.environ["PATH"],
                        "HOME": tmp,
                        "TMPDIR": tmp,
                        "WASTESORT_CACHE_DIR": f"{tmp}/wastesort",
                        **env,
                    }
                    if child_env.pop("NO_PYC", None):  # as on Lambda with no .pyc shipped:
                        child_env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pyc"  # compile every module
                    # The baseline's code comes first on sys.path ('' is the cwd).
                    cwd = child_env.pop("CWD", None) or (ROOT if "-S" not in command else tmp)
                    start = time.time()
                    result = subprocess.run(
                        [*command, "-c", CHILD, modules[name], str(event_file)],
                        cwd=cwd,
                        env=child_env,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=False,
                    )
                if result.returncode != 0:
                    raise RuntimeError(f"{name}: {result.stderr[-2000:]}")
                out = json.loads(result.stdout.strip().splitlines()[-1])
                out["cold_ms"] = (out.pop("t") - start) * 1000
                runs[name].append(out)
                print(
                    f"  {name:<46} rep {rep + 1}: {out['cold_ms']:7.0f} ms "
                    f"(status {out['status']})",
                    flush=True,
                )
    return {
        name: {
            "cold_ms": round(statistics.median(r["cold_ms"] for r in results)),
            "statuses": sorted({r["status"] for r in results}),
            "phases_ms": {
                key: round(statistics.median(r["phases"][key] for r in results), 1)
                for key in ("imports_ms", "app_ms", "model_ms", "total_ms")
            }
            if results[0].get("phases")
            else None,
        }
        for name, results in runs.items()
    }


# --- 3. package size -------------------------------------------------------------------------


def package_sizes() -> dict[str, Any]:
    from tools import lambda_prune, lambda_zip

    pruned = lambda_zip.build("arm64")
    pyc = sum(p.stat().st_size for p in Path(pruned.directory).rglob("*.pyc"))
    tf_target = WORK / "tf-package-arm64"
    lambda_prune.remove_path(tf_target)
    tf_target.mkdir(parents=True)
    # The same package on TensorFlow instead of ai-edge-litert, pruned only of what no package
    # needs (the litert-specific pruning has nothing to act on).
    requirements = [r for r in lambda_zip.pinned() if not r.startswith("ai-edge-litert")]
    lambda_zip.install(
        [*requirements, "tensorflow==2.21.0"],
        tf_target,
        arch="arm64",
        python_version="3.12",
        wheels=lambda_zip.BUILD / "wheels" / "tf-arm64-cp312",
        find_links=[lambda_zip.BUILD / "wheels" / "arm64-cp312"],
    )
    lambda_zip.copy_sources(tf_target)
    for name in lambda_prune.IN_RUNTIME:
        lambda_prune.remove_dist(tf_target, name)
    lambda_prune.prune_generic(tf_target)
    tf_bytes = lambda_zip.size_of(tf_target)
    lambda_prune.remove_path(tf_target)
    return {
        "arm64_pruned_mb": pruned.mb("pruned_bytes"),
        "arm64_compiled": pruned.compiled,
        "arm64_pruned_without_pyc_mb": round((pruned.pruned_bytes - pyc) / 1e6, 1),
        "arm64_unpruned_mb": pruned.mb("unpruned_bytes"),
        "arm64_zip_mb": pruned.mb("zip_bytes"),
        "tensorflow_arm64_mb": round(tf_bytes / 1e6, 1),
        "largest_mb": {k: round(v / 1e6, 1) for k, v in pruned.largest.items()},
    }


# --- report ----------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    http = result["http"]
    base = http["keras model.predict"]
    lines = [
        "| server | clients | req/s | p50 ms | p99 ms | req/s vs Keras |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, by_clients in http.items():
        for clients, cell in by_clients.items():
            ratio = cell["rps"] / base[clients]["rps"] if base[clients]["rps"] else float("nan")
            lines.append(
                f"| {name} | {clients} | {cell['rps']:.1f} | {cell['p50_ms']:.1f} | "
                f"{cell['p99_ms']:.1f} | {ratio:.1f}x |"
            )
    lines += [
        "",
        "| cold start (Lambda handler, model on S3 via moto) | median ms | phases |",
        "| --- | ---: | --- |",
    ]
    for name, cell in result["cold_start"].items():
        phases = ", ".join(
            f"{k.removesuffix('_ms')} {v:.0f}" for k, v in (cell["phases_ms"] or {}).items()
        )
        lines.append(f"| {name} | {cell['cold_ms']} | {phases} |")
    sizes = result.get("package")
    if sizes:
        lines += [
            "",
            "| package (arm64, python3.12, unzipped) | MB |",
            "| --- | ---: |",
            f"| pruned (`make package`, with .pyc) | {sizes['arm64_pruned_mb']} |",
            f"| pruned, without .pyc | {sizes.get('arm64_pruned_without_pyc_mb')} |",
            f"| unpruned (same wheels, boto3 included) | {sizes['arm64_unpruned_mb']} |",
            f"| TensorFlow-based (tensorflow 2.21 instead of ai-edge-litert, no .pyc) | "
            f"{sizes['tensorflow_arm64_mb']} |",
            f"| zip of the pruned package | {sizes['arm64_zip_mb']} |",
        ]
    return "\n".join(lines)


def capture_part(model_uri: str, body: bytes, *, quick: bool) -> dict[str, Any]:
    print("capture on vs off, Lambda handler path ...", flush=True)
    from bench import capture

    return capture.run(model_uri, body, rounds=2 if quick else 6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--model", help="registry URI of the TFLite model (default: stand-in)")
    parser.add_argument("--keras", type=Path, help="the same model as .keras (with --model)")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 3 s per cell")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each HTTP cell")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["http", "cold", "package", "overload", "memory", "capture"],
    )
    args = parser.parse_args(argv or [])
    if bool(args.model) != bool(args.keras):
        parser.error("--model and --keras go together (the same model in both forms)")
    model_uri, keras_path = (args.model, args.keras) if args.model else ensure_standin()
    reps, seconds = (1, 3.0) if args.quick else (args.reps, 6.0)
    body = test_jpeg()
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, shared",
        "model": model_uri,
        "image": f"320x240 JPEG, {len(body)} bytes",
        "repetitions": reps,
        "seconds_per_cell": seconds,
        "default_pool": DEFAULT_POOL,
    }
    if "package" not in args.skip:
        print("package sizes ...", flush=True)
        result["package"] = package_sizes()
    if "cold" not in args.skip:
        print("cold start ...", flush=True)
        from tools import lambda_zip

        local = lambda_zip.build(
            "x86_64",
            python_version=f"{sys.version_info[0]}.{sys.version_info[1]}",
            out=WORK / "lambda",
            make_zip=False,
        )
        result["cold_start"] = cold_start(
            model_uri, keras_path, body, reps=max(reps, 3) + 2, package_dir=Path(local.directory)
        )
    if "http" not in args.skip:
        print("HTTP under load ...", flush=True)
        result["http"] = http_bench(model_uri, keras_path, body, reps=reps, seconds=seconds)
    if "overload" not in args.skip:
        print("overload, with and without the limit in flight ...", flush=True)
        from bench import overload

        result["overload"] = overload.run(
            model_uri, body, reps=reps, seconds=3.0 if args.quick else 5.0
        )
    if "memory" not in args.skip:
        print("peak memory of one big PNG ...", flush=True)
        from bench import memory

        result["memory"] = memory.measure()
    if "capture" not in args.skip:
        result["capture"] = capture_part(model_uri, body, quick=args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "serving.json"
    if args.skip and previous.exists():  # a partial run keeps the other parts' last results
        result = {**json.loads(previous.read_text()), **result}
    previous.write_text(json.dumps(result, indent=2) + "\n")
    if {"http", "cold_start"} <= set(result):
        print()
        print(table(result))
    from bench import capture, memory, overload

    for part, module in (("overload", overload), ("memory", memory), ("capture", capture)):
        if part in result:
            print()
            print(module.table(result[part]))
    print(f"\nwrote {RESULTS / 'serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
