"""The inference core against its floor, side by side in one run.

- per image: `Classifier.predict(jpeg_bytes)` vs the floor (Pillow decode + resize +
  interpreter invoke, nothing else), interleaved so machine noise hits both alike;
- start-up: `import wastesort` and the CLI's time to its first result, beside importing
  numpy + Pillow + pydantic + the LiteRT interpreter alone;
- concurrency: 8 threads through one Classifier with 1, 2 and 8 pooled interpreters.

    python -m bench core [--model URI] [--rounds N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wastesort import Classifier

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SAMPLES = sorted((ROOT / "samples").rglob("*.jpg"))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def floor_fn(clf: Classifier):
    """The least work that classifies: decode, resize, invoke. No checks, no EXIF, no scoring."""
    from ai_edge_litert.interpreter import Interpreter

    from wastesort.interpreter import LOGITS, output_details

    content = clf.model_content  # the very bytes the Classifier runs
    interpreter = Interpreter(model_content=content, num_threads=clf.runtime.num_threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = output_details(interpreter)[LOGITS]  # by name: a two-output model lists it second
    size = (clf.input_spec.width, clf.input_spec.height)

    def run(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
        interpreter.set_tensor(inp["index"], np.asarray(image, dtype=np.uint8)[None])
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def per_image(clf: Classifier, rounds: int) -> dict:
    images = [p.read_bytes() for p in SAMPLES]
    floor = floor_fn(clf)
    for data in images[:3]:  # warm both paths
        clf.predict(data)
        floor(data)
    core_ms, floor_ms = [], []
    for i in range(rounds):
        data = images[i % len(images)]
        order = [(clf.predict, core_ms), (floor, floor_ms)]
        for fn, sink in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn(data)
            sink.append((time.perf_counter() - start) * 1000)
    return {
        "images": len(images),
        "rounds": rounds,
        "core_p50_ms": pct(core_ms, 50),
        "core_p99_ms": pct(core_ms, 99),
        "floor_p50_ms": pct(floor_ms, 50),
        "floor_p99_ms": pct(floor_ms, 99),
        "ratio_p50": pct(core_ms, 50) / pct(floor_ms, 50),
    }


def _wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def startup(model: str | None, runs: int = 5) -> dict:
    py = sys.executable
    libs = "import numpy, PIL.Image, pydantic; from ai_edge_litert.interpreter import Interpreter"
    cli = [py, "-m", "wastesort", "classify", str(SAMPLES[0])]
    if model:
        cli += ["--model", model]
    return {
        "python_bare_ms": _wall([py, "-c", "pass"], runs),
        "libs_import_ms": _wall([py, "-c", libs], runs),
        "wastesort_import_ms": _wall([py, "-c", "import wastesort"], runs),
        "cli_first_result_ms": _wall(cli, runs),
    }


def concurrency(model: str | None, requests: int = 96) -> dict:
    images = [p.read_bytes() for p in SAMPLES]
    work = [images[i % len(images)] for i in range(requests)]
    out = {}
    for pool in (1, 2, 8):
        threads = max(1, (os.cpu_count() or 2) // pool)
        clf = Classifier.load(model, pool_size=pool, num_threads=threads)
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(clf.predict, work[:16]))  # build the pool
            start = time.perf_counter()
            list(ex.map(clf.predict, work))
            elapsed = time.perf_counter() - start
        out[f"pool_{pool}_threads_{threads}_img_per_s"] = requests / elapsed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench core")
    parser.add_argument("--model", default=os.environ.get("WASTESORT_MODEL"))
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv if argv is not None else [])
    clf = Classifier.load(args.model)
    result = {
        "model_version": clf.version,
        "input": f"{clf.input_spec.width}x{clf.input_spec.height}",
        "runtime": clf.runtime.to_dict(),
        "cpu_count": os.cpu_count(),
        "per_image": per_image(clf, args.rounds),
        "startup": startup(args.model),
        "concurrency_8_threads": concurrency(args.model),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "core.json").write_text(json.dumps(result, indent=2) + "\n")
    p = result["per_image"]
    print(f"model {result['model_version']} ({result['input']}), {clf.runtime.name}")
    print(f"{'per image (240x320 JPEG)':<34}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'  Classifier.predict':<34}{p['core_p50_ms']:>10.2f}{p['core_p99_ms']:>10.2f}")
    print(
        f"{'  floor: decode+resize+invoke':<34}{p['floor_p50_ms']:>10.2f}{p['floor_p99_ms']:>10.2f}"
    )
    print(f"{'  ratio core/floor at p50':<34}{p['ratio_p50']:>10.2f}   (target <= 1.2)")
    print("start-up (median of 5, ms)")
    for key, value in result["startup"].items():
        print(f"  {key:<32}{value:>10.0f}")
    print("8 threads, one Classifier (images/s)")
    for key, value in result["concurrency_8_threads"].items():
        print(f"  {key:<32}{value:>10.1f}")
    print(f"wrote {RESULTS / 'core.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
