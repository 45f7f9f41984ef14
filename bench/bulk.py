"""Bulk classification: today's CLI path against the worker pool, side by side in one run.

Both are the whole `python -m wastesort classify FOLDER --json` command (process start, model
load, every image, exit) on the same folder, interleaved so machine noise hits both alike:

- in-process: `--workers 1 --threads 2`, one interpreter with two threads (the CLI before the
  pool existed);
- pool: `--workers 2`, two worker processes with one single-threaded interpreter each.

    python -m bench bulk [--model URI] [--copies SMALL LARGE] [--repeats N]

The folders are the 18 sample JPEGs (240x320) hard-linked `--copies` times (20 and 100: 360 and
1,800 images) into a temp dir; the two sizes split each command's time into a fixed cost
(start-up) and a rate once running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SAMPLES = sorted((ROOT / "samples").rglob("*.jpg"))
MODES = {
    "in-process, 1 interpreter x 2 threads": ["--workers", "1", "--threads", "2"],
    "--workers 2 (1 thread each)": ["--workers", "2"],
}
TARGET = 1.3


def make_folder(root: Path, copies: int) -> int:
    """`copies` hard links (copies where links fail) of every sample; returns the image count."""
    for n in range(copies):
        for path in SAMPLES:
            target = root / f"{n:03d}" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                target.write_bytes(path.read_bytes())
    return copies * len(SAMPLES)


def timed_run(folder: Path, model: str | None, extra: list[str]) -> float:
    """Seconds for one whole `classify` command; its records are checked, then dropped."""
    command = [sys.executable, "-m", "wastesort", "classify", str(folder), "--json", *extra]
    if model:
        command += ["--model", model]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench bulk: {' '.join(command)} failed:\n{result.stderr}")
    return elapsed


def stages(model: str | None, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Median ms per image of decode+resize (`preprocess`) and of the invoke
    (`outputs_from_arrays`) with 1 and 2 interpreter threads: what bounds the pool's gain.
    With decode d and invoke i1 (1 thread) or i2 (2 threads), two one-thread workers can be at
    most (d + i2) / ((d + i1) / 2) times as fast as one two-thread interpreter."""
    from wastesort import Classifier

    images = [path.read_bytes() for path in SAMPLES]
    out = {}
    for threads in (1, 2):
        clf = Classifier.load(model, num_threads=threads)
        arrays = [clf.preprocess(data) for data in images]  # warm
        decode, invoke = [], []
        for _ in range(rounds):
            for data, array in zip(images, arrays, strict=True):
                start = time.perf_counter()
                clf.preprocess(data)
                middle = time.perf_counter()
                clf.outputs_from_arrays(array)
                invoke.append((time.perf_counter() - middle) * 1000)
                decode.append((middle - start) * 1000)
        out[f"{threads} thread(s)"] = {
            "decode_ms": statistics.median(decode),
            "invoke_ms": statistics.median(invoke),
        }
    return out


def measure(folder: Path, model: str | None, repeats: int) -> dict[str, list[float]]:
    """Seconds per mode, `repeats` interleaved rounds (the order flips every round)."""
    seconds: dict[str, list[float]] = {name: [] for name in MODES}
    for repeat in range(repeats):
        order = list(MODES.items())
        for name, extra in order if repeat % 2 == 0 else order[::-1]:
            seconds[name].append(timed_run(folder, model, extra))
    return seconds


def summarise(images: int, seconds: dict[str, list[float]]) -> dict[str, Any]:
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    baseline, pool = (medians[name] for name in MODES)
    # Each round's two runs are back to back: their ratio is less moved by the load of other
    # work on the machine, which drifts over a run, than the ratio of medians.
    paired = statistics.median(a / b for a, b in zip(*seconds.values(), strict=True))
    return {
        "images": images,
        "seconds": seconds,
        "median_s": medians,
        "images_per_s": {name: images / value for name, value in medians.items()},
        "speedup": baseline / pool,
        "speedup_paired_median": paired,
    }


def split(small: dict[str, Any], large: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each command's fixed cost (process start, imports, model, pool) and its rate once
    running, from t = fixed + images / rate at the two sizes."""
    out = {}
    for name in MODES:
        t1, t2 = small["median_s"][name], large["median_s"][name]
        rate = (large["images"] - small["images"]) / (t2 - t1)
        out[name] = {"fixed_s": t1 - small["images"] / rate, "steady_images_per_s": rate}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench bulk")
    parser.add_argument("--model", default=os.environ.get("WASTESORT_MODEL"))
    parser.add_argument(
        "--copies", type=int, nargs=2, default=[20, 100], help="copies of the 18 samples"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv if argv is not None else [])
    load_before = os.getloadavg()[0]
    sizes = []
    for copies in args.copies:
        with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
            folder = Path(tmp)
            images = make_folder(folder, copies)
            for extra in MODES.values():  # warm the page cache and the model cache
                timed_run(folder, args.model, extra)
            sizes.append(summarise(images, measure(folder, args.model, args.repeats)))
    result = {
        "what": "wall seconds of the whole `python -m wastesort classify FOLDER --json` command",
        "modes": MODES,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_1m": [load_before, os.getloadavg()[0]],
        "model": args.model or "bundled production",
        "sizes": sizes,
        "fixed_and_steady": split(*sizes),
        "stages_ms": stages(args.model),
        "target": TARGET,
    }
    one, two = result["stages_ms"].values()
    result["ceiling"] = (two["decode_ms"] + two["invoke_ms"]) / (
        (one["decode_ms"] + one["invoke_ms"]) / 2
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bulk.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"240x320 JPEGs, {args.repeats} interleaved rounds, medians of wall seconds")
    print(f"{'images':>7}  {'command':<40}{'s':>8}{'images/s':>10}")
    for size in sizes:
        for name, value in size["median_s"].items():
            print(f"{size['images']:>7}  {name:<40}{value:>8.2f}{size['images'] / value:>10.1f}")
        print(
            f"{'':>7}  {'speed-up (medians; paired rounds)':<40}{size['speedup']:>8.2f}x"
            f"  ({size['speedup_paired_median']:.2f}x; target >= {TARGET})"
        )
    print("fixed cost and rate once running (from the two sizes)")
    for name, value in result["fixed_and_steady"].items():
        print(
            f"  {name:<40}{value['fixed_s']:>6.2f} s  {value['steady_images_per_s']:>7.1f} images/s"
        )
    print("per image, in one process (median ms)")
    for name, value in result["stages_ms"].items():
        print(f"  {name:<12} decode {value['decode_ms']:.2f}  invoke {value['invoke_ms']:.2f}")
    print(f"  ceiling of the pool's speed-up from these: {result['ceiling']:.2f}x")
    print("load average (1 min) before, after: {:.1f}, {:.1f}".format(*result["load_average_1m"]))
    print(f"wrote {RESULTS / 'bulk.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
