"""What the second output costs: one-output vs two-output (`logits` + `embedding`) int8 files.

python -m bench outputs  (or python -m bench.outputs) -> bench/results/outputs.json

The tiny test model and its named twin (same weights, built by tests/tiny_model.py in a
subprocess, so this process never imports TensorFlow), each loaded through
`wastesort.Classifier` as served, invoked side by side in interleaved rounds; medians and the
ratio. The bundled Lite0's twin (converted once by hand from a training run) measured +160 bytes
and the same invoke time within noise (docs/core.md); this keeps a repeatable check of the cost.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from wastesort import Classifier

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def _models(out: Path) -> tuple[Path, Path]:
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tiny_model.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out / "tiny_int8.tflite", out / "named" / "tiny_int8.tflite"


def run(rounds: int = 30, calls: int = 200) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        one_path, two_path = _models(Path(tmp))
        one = Classifier.load(one_path, labels=LABELS, num_threads=1)
        two = Classifier.load(two_path, labels=LABELS, num_threads=1)
        sizes = {"one": one_path.stat().st_size, "two": two_path.stat().st_size}
    spec = one.input_spec
    batch = np.random.default_rng(0).integers(0, 255, (spec.height, spec.width, 3), np.uint8)
    same = [
        one.predict_arrays(batch)[0].predicted_class == two.predict_arrays(batch)[0].predicted_class
    ]
    times: dict[str, list[float]] = {"one": [], "two": []}
    for r in range(rounds):
        order = [("one", one), ("two", two)] if r % 2 == 0 else [("two", two), ("one", one)]
        for name, clf in order:
            start = time.perf_counter()
            for _ in range(calls):
                clf.predict_arrays(batch)
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "int8_bytes": sizes,
        "added_bytes": sizes["two"] - sizes["one"],
        "predict_us_median": {k: round(v, 2) for k, v in med.items()},
        "ratio_two_vs_one": round(med["two"] / med["one"], 3),
        "same_class": all(same),
        "rounds": rounds,
        "calls_per_round": calls,
    }


def main(argv: list[str] | None = None) -> int:
    result = run()
    print("| model | int8 bytes | predict_arrays median µs |")
    print("| --- | ---: | ---: |")
    for key, label in (("one", "logits only"), ("two", "logits + embedding")):
        size = result["int8_bytes"][key]
        print(f"| tiny, {label} | {size:,} | {result['predict_us_median'][key]} |")
    print(f"two vs one: x{result['ratio_two_vs_one']}, +{result['added_bytes']} bytes")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "outputs.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
