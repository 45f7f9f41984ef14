"""The edge runner against the bare core, side by side in one run.

- core: `Classifier.predict(jpeg_bytes)` in a loop over the same images (no telemetry, no
  decisions, no actuators): the ceiling the runner is measured against;
- runner: `python -m edge run --source folder:DIR --once` in its own process, telemetry on
  (SQLite WAL, one committed event per decision) and the default log actuator, reporting
  decisions/s and per-stage latency; its peak RSS is read from the kernel (wait4);
- rounds alternate core and runner so machine noise hits both alike; medians are reported.

    python -m bench edge [--model URI] [--copies N] [--rounds N] [--threads N]

Published Raspberry Pi / Coral figures for the same model family are printed beside ours,
labelled as published, with their sources; they were not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wastesort import Classifier
from wastesort.classifier import default_model_uri
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


def core_round(clf: Classifier, images: list[bytes]) -> float:
    """Images per second through `Classifier.predict`."""
    start = time.perf_counter()
    for data in images:
        clf.predict(data)
    return len(images) / (time.perf_counter() - start)


def runner_round(model: str, folder: Path, threads: int, work: Path) -> dict:
    """One `python -m edge run --once` in a child process; its stats and peak RSS."""
    state = Path(tempfile.mkdtemp(dir=work, prefix="state-"))
    stats_path = state / "stats.json"
    config = work / "edge.yaml"
    config.write_text(
        f"device_id: bench\nstate_dir: {state}\n"
        f"model:\n  registry: {model}\n  num_threads: {threads}\n  self_test: true\n"
        "telemetry:\n  enabled: true\n  durability: normal\n"
        "actuators:\n  - type: log\n"
    )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench edge")
    parser.add_argument("--model", default=os.environ.get("WASTESORT_MODEL"))
    parser.add_argument("--copies", type=int, default=10, help="times the 18 samples repeat")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args(argv if argv is not None else [])
    model = args.model or default_model_uri()

    clf = Classifier.load(model, num_threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "frames"
        folder.mkdir()
        images = make_folder(folder, args.copies)
        for data in images[:5]:
            clf.predict(data)  # warm
        core, runs = [], []
        for _ in range(args.rounds):
            core.append(core_round(clf, images))
            runs.append(runner_round(model, folder, args.threads, work))

    stages = {
        name: statistics.median(r["stage_ms"][name] for r in runs) for name in runs[0]["stage_ms"]
    }
    core_ips = statistics.median(core)
    runner_dps = statistics.median(r["decisions_per_s"] for r in runs)
    result = {
        "model_version": clf.version,
        "input": f"{clf.input_spec.width}x{clf.input_spec.height}",
        "runtime": clf.runtime.to_dict(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "frames_per_round": len(images),
        "rounds": args.rounds,
        "core_images_per_s": round(core_ips, 2),
        "runner_decisions_per_s": round(runner_dps, 2),
        "runner_vs_core": round(runner_dps / core_ips, 3),
        "runner_stage_ms": {k: round(v, 3) for k, v in stages.items()},
        "runner_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "targets": {"runner_vs_core": ">= 0.90", "peak_rss_mb": "<= 150"},
        "per_round": {"core_images_per_s": core, "runner": runs},
        "published_not_measured_here": PUBLISHED,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge.json").write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"model {clf.version} ({result['input']}), {clf.runtime.name} {clf.runtime.version}, "
        f"{args.threads} threads, {len(images)} frames x {args.rounds} rounds (median)"
    )
    print(f"{'throughput':<44}{'per s':>10}")
    print(f"{'  core: Classifier.predict(bytes)':<44}{core_ips:>10.1f}")
    print(f"{'  edge runner, telemetry on (decisions)':<44}{runner_dps:>10.1f}")
    print(f"{'  runner / core':<44}{runner_dps / core_ips:>10.2f}   (target >= 0.90)")
    print(f"{'runner per frame, by stage':<44}{'ms':>10}")
    for name, ms in stages.items():
        print(f"  {name:<42}{ms:>10.3f}")
    print(f"{'runner peak RSS (MB)':<44}{result['runner_peak_rss_mb']:>10.1f}   (target <= 150)")
    print("published figures (NOT measured here; invoke only, other hardware):")
    for row in PUBLISHED:
        print(f"  {row['model']:<38}{row['device']:<48}{row['invoke_ms']:>7.1f} ms")
        print(f"    source: {row['source']}")
    print(f"wrote {RESULTS / 'edge.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
