"""The edge runner against the bare core, side by side in one run.

- core: `Classifier.predict(jpeg_bytes)` in a loop over the same images (no telemetry, no
  decisions, no actuators): the ceiling the runner is measured against;
- runner: the runner's loop as `python -m edge run --once` builds it (folder source, telemetry
  on: one committed SQLite WAL event per decision, the log actuator), in this process so that
  short rounds alternate with the core's and the machine's noise hits both alike; the ratio
  reported is the median of the per-round ratios;
- process: `python -m edge run --source folder:DIR --once` in its own process, for its own
  decisions/s and per-stage latency and its peak RSS from the kernel (wait4).

    python -m bench.edge [--model URI] [--copies N] [--rounds N] [--processes N] [--threads N]

Published Raspberry Pi / Coral figures for the same model family are printed beside ours,
labelled as published, with their sources; they were not measured here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wastesort import Classifier
from wastesort.classifier import default_model_uri
from wastesort.errors import WastesortError
from wastesort.runtime import default_threads

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SAMPLES = sorted((ROOT / "samples").rglob("*.jpg"))

PUBLISHED = [
    {
        "model": "EfficientNet-Lite0 int8 (224x224)",
        "device": "Pixel 4 CPU, 4 threads",
        "invoke_ms": 6.5,
        "source": "github.com/tensorflow/tpu models/official/efficientnet/lite/README.md",
    },
    {
        "model": "EfficientNet-Lite0 int8 (224x224)",
        "device": "Pixel 4 Edge TPU",
        "invoke_ms": 3.8,
        "source": "github.com/tensorflow/tpu models/official/efficientnet/lite/README.md",
    },
    {
        "model": "EfficientNet-Lite0 (224x224)",
        "device": "Raspberry Pi 4 CPU (blog, one run)",
        "invoke_ms": 49.0,
        "source": "dev.to/tildalice/mobilenet-vs-efficientnet-lite-pi-4-first-model-38ms-gap-3l84",
    },
    {
        "model": "MobileNet v2 int8 (224x224)",
        "device": "Coral USB Accelerator (USB 3.0), desktop host",
        "invoke_ms": 2.6,
        "source": "coral.ai/docs/edgetpu/benchmarks (table 1)",
    },
    {
        "model": "MobileNet v2 int8 (224x224)",
        "device": "Coral Dev Board CPU (4x Cortex-A53, no TPU)",
        "invoke_ms": 122.0,
        "source": "coral.ai/docs/edgetpu/benchmarks (table 1)",
    },
    {
        "model": "EfficientNet-EdgeTpu-S int8 (224x224)",
        "device": "Coral USB Accelerator (USB 3.0), desktop host",
        "invoke_ms": 5.1,
        "source": "coral.ai/docs/edgetpu/benchmarks (table 1)",
    },
    {
        "model": "MobileNet v2 SSD (COCO, 300x300)",
        "device": "Raspberry Pi 4, TensorFlow Lite",
        "invoke_ms": 112.6,
        "source": "github.com/aallan/benchmarking-ml-on-the-edge",
    },
    {
        "model": "MobileNet v2 SSD (COCO, 300x300)",
        "device": "Raspberry Pi 5, TensorFlow Lite",
        "invoke_ms": 23.5,
        "source": "github.com/aallan/benchmarking-ml-on-the-edge",
    },
    {
        "model": "MobileNet v2 SSD (COCO, 300x300)",
        "device": "Coral USB Accelerator (USB 3.0) on a Raspberry Pi",
        "invoke_ms": 18.2,
        "source": "github.com/aallan/benchmarking-ml-on-the-edge",
    },
]


def make_folder(dest: Path, copies: int) -> list[bytes]:
    """The samples, `copies` times over, as the runner's folder source will read them."""
    images = []
    for n in range(copies):
        for path in SAMPLES:
            target = dest / f"{n:03d}-{path.name}"
            shutil.copyfile(path, target)
            images.append(path.read_bytes())
    return images


def core_round(clf: Classifier, images: list[bytes]) -> tuple[float, float]:
    """Images per second through `Classifier.predict`: by wall time, and by this process's
    CPU time (less sensitive to other work on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    for data in images:
        clf.predict(data)
    return (
        len(images) / (time.perf_counter() - start),
        len(images) / (time.process_time() - cpu),
    )


def edge_yaml(model: str, state: Path, threads: int) -> str:
    return (
        f"device_id: bench\nstate_dir: {state}\n"
        f"model:\n  registry: {model}\n  num_threads: {threads}\n"
        "telemetry:\n  enabled: true\n  durability: normal\n"
        "actuators:\n  - type: log\n"
    )


def in_process_runner(model: str, folder: Path, threads: int, work: Path) -> Any:
    """A runner as `python -m edge run --once` builds it, its log actuator logging at INFO
    (to /dev/null, as the journal would take it)."""
    from edge.config import load_config
    from edge.wiring import build_runner

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    logging.getLogger("edge").addHandler(handler)
    logging.getLogger("edge").setLevel(logging.INFO)
    config_path = work / "inproc.yaml"
    config_path.write_text(edge_yaml(model, work / "inproc-state", threads))
    config = load_config(config_path, source={"kind": "folder", "path": folder, "watch": False})
    return build_runner(config, once=True)


def runner_round(runner: Any, folder: Path) -> tuple[float, float]:
    """Decisions per second through the runner's loop body: read the file, decode,
    preprocess, invoke, decide, commit the telemetry event, act."""
    from edge.sources import FolderSource

    before = runner.stats.decisions
    start, cpu = time.perf_counter(), time.process_time()
    for frame in FolderSource(folder, watch=False).frames(runner.stop):
        if frame is not None:
            runner.handle(frame)
    done = runner.stats.decisions - before
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def process_run(model: str, folder: Path, threads: int, work: Path) -> dict:
    """`python -m edge run --once` in a child process: its stats, and its peak RSS (wait4)."""
    state = Path(tempfile.mkdtemp(dir=work, prefix="state-"))
    stats_path = state / "stats.json"
    config = work / "edge.yaml"
    config.write_text(edge_yaml(model, state, threads))
    command = [
        sys.executable, "-m", "edge", "run", "--config", str(config),
        "--source", f"folder:{folder}", "--once", "--stats-json", str(stats_path),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"edge run failed: {stderr.decode()[-2000:]}")
    stats = json.loads(stats_path.read_text())
    stats["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    return stats


def measure(args: argparse.Namespace, model: str) -> dict:
    clf = Classifier.load(model, num_threads=args.threads)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "frames"
        folder.mkdir()
        images = make_folder(folder, args.copies)
        runner = in_process_runner(model, folder, args.threads, work)
        core_round(clf, images[:5])  # warm both
        runner_round(runner, folder)
        core: list[tuple[float, float]] = []
        edge: list[tuple[float, float]] = []
        for i in range(args.rounds):  # alternate, so the machine's noise hits both alike
            steps = [
                (core, lambda: core_round(clf, images)),
                (edge, lambda: runner_round(runner, folder)),
            ]
            for sink, step in steps if i % 2 == 0 else steps[::-1]:
                sink.append(step())
        runner.shutdown()
        runs = [process_run(model, folder, args.threads, work) for _ in range(args.processes)]
    ratios = [e[0] / c[0] for e, c in zip(edge, core, strict=True)]
    cpu_ratios = [e[1] / c[1] for e, c in zip(edge, core, strict=True)]
    return {
        "model_version": clf.version,
        "input": f"{clf.input_spec.width}x{clf.input_spec.height}",
        "runtime": clf.runtime.to_dict(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load],
        },
        "frames_per_round": len(images),
        "rounds": args.rounds,
        "core_images_per_s": round(statistics.median(c[0] for c in core), 2),
        "runner_decisions_per_s": round(statistics.median(e[0] for e in edge), 2),
        "runner_vs_core": round(statistics.median(ratios), 3),
        "core_images_per_cpu_s": round(statistics.median(c[1] for c in core), 2),
        "runner_decisions_per_cpu_s": round(statistics.median(e[1] for e in edge), 2),
        "runner_vs_core_by_cpu_time": round(statistics.median(cpu_ratios), 3),
        "process": {
            "decisions_per_s": round(statistics.median(r["decisions_per_s"] for r in runs), 2),
            "stage_ms": {
                name: round(statistics.median(r["stage_ms"][name] for r in runs), 3)
                for name in runs[0]["stage_ms"]
            },
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        },
        "targets": {"runner_vs_core": ">= 0.90", "peak_rss_mb": "<= 150"},
        "per_round": {
            "core_images_per_s_wall_cpu": core,
            "runner_decisions_per_s_wall_cpu": edge,
            "runs": runs,
        },
        "published_not_measured_here": PUBLISHED,
    }


def report(result: dict, threads: int) -> None:
    process = result["process"]
    runtime = result["runtime"]
    print(
        f"model {result['model_version']} ({result['input']}), {runtime['name']} "
        f"{runtime['version']}, {threads} threads, {result['frames_per_round']} frames x "
        f"{result['rounds']} alternating rounds, "
        f"load average {result['machine']['load_average_at_start'][0]}"
    )
    rows = [
        ("throughput, median of rounds", "per s"),
        ("  core: Classifier.predict(bytes)", f"{result['core_images_per_s']:.1f}"),
        ("  edge runner loop, telemetry on", f"{result['runner_decisions_per_s']:.1f}"),
        ("  runner / core (median of round ratios)", f"{result['runner_vs_core']:.2f}"),
        ("  runner / core by CPU time", f"{result['runner_vs_core_by_cpu_time']:.2f}"),
        ("python -m edge run --once, own process", f"{process['decisions_per_s']:.1f}"),
        ("  per frame, by stage", "ms"),
        *((f"    {k}", f"{v:.3f}") for k, v in process["stage_ms"].items()),
        ("  peak RSS (MB)", f"{process['peak_rss_mb']:.1f}"),
    ]
    for label, value in rows:
        print(f"{label:<46}{value:>10}")
    print("targets: runner/core >= 0.90, peak RSS <= 150 MB")
    print("published figures (NOT measured here; model invoke only, other hardware):")
    for row in PUBLISHED:
        print(f"  {row['model']:<38}{row['device']:<50}{row['invoke_ms']:>7.1f} ms")
        print(f"    source: {row['source']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench edge")
    parser.add_argument("--model", default=os.environ.get("WASTESORT_MODEL"))
    parser.add_argument("--copies", type=int, default=2, help="times the 18 samples repeat")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="`edge run` processes")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args(argv if argv is not None else [])
    model = args.model or default_model_uri()
    try:
        Classifier.load(model)
    except WastesortError as exc:
        print(f"bench edge: no model to measure ({exc}); pass --model URI")
        return 1
    result = measure(args, model)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.threads)
    print(f"wrote {RESULTS / 'edge.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
