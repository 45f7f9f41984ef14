"""Peak memory of one big image, today's code against the code before big images shrank in
strips, side by side in one run (`make bench-serving` runs it; alone: `python -m bench.memory`).

The image: a 6300x6300 RGBA PNG (39.7 MP, just under the 40 MP limit; ~150 KB on the wire,
`Image.new("RGBA", (6300, 6300))`). Each measurement is a fresh process that first does all it
would do anyway (imports; for `/predict`, the bundled model loaded and one small request), then
takes its peak RSS so far (`VmHWM` in /proc/self/status on Linux: unlike `ru_maxrss` it does not
start from the forking parent's peak; `resource.getrusage` elsewhere) as the baseline, then
handles the big image once and takes the peak again:

- `preprocess`: `wastesort.preprocess.preprocess(png, spec)` alone (the model's 256x192 input);
- `/predict`: one `POST /predict` with the PNG as a raw `image/png` body, straight into the app
  (ASGI, no server), model and metrics as deployed.

"Before" is `wastesort/preprocess.py` at `BEFORE` (read with `git show`, imported from a
temporary folder; for `/predict` it replaces the functions the classifier calls).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "bench-serving"
PY = sys.executable

BEFORE = "6a907c4~1"
"""The commit before "core: big non-JPEG images shrink in strips" (6a907c4)."""
SIZE = (6300, 6300)

CHILD = """
import asyncio, importlib.util, json, resource, sys

mode, png_path, before = sys.argv[1], sys.argv[2], sys.argv[3]
png = open(png_path, "rb").read()

def peak_mb():
    # VmHWM: this process's own peak (ru_maxrss would start from the forking parent's)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

import wastesort.classifier
from wastesort import preprocess as module
if before != "-":
    spec = importlib.util.spec_from_file_location("preprocess_before", before)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wastesort.classifier.load_image = module.load_image
    wastesort.classifier.to_tensor = module.to_tensor

if mode == "preprocess":
    from wastesort.manifest import InputSpec
    spec = InputSpec(height=256, width=192)
    base = peak_mb()
    shape = list(module.preprocess(png, spec).shape)
    print(json.dumps({"base_mb": base, "peak_mb": peak_mb(), "result": shape}))
    sys.exit(0)

from functions.api.app import create_app
from functions.api.settings import Settings

app = create_app(Settings(pool_size=1), load_on_startup=False)
app.state.model.load()

async def post(body, media_type):
    sent, out = False, []
    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    async def send(message):
        out.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", media_type), (b"content-length", b"%d" % len(body))]}
    await app(scope, receive, send)
    return out[0]["status"]

small = open(sys.argv[4], "rb").read()
assert asyncio.run(post(small, b"image/jpeg")) == 200
base = peak_mb()
status = asyncio.run(post(png, b"image/png"))
print(json.dumps({"base_mb": base, "peak_mb": peak_mb(), "result": status}))
"""


def big_png() -> Path:
    path = WORK / "rgba-6300.png"
    if not path.exists():
        from PIL import Image

        WORK.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", SIZE).save(path)
    return path


def before_module(folder: Path) -> Path | None:
    """`wastesort/preprocess.py` at BEFORE, or None without the history (a tarball)."""
    shown = subprocess.run(
        ["git", "show", f"{BEFORE}:wastesort/preprocess.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        return None
    path = folder / "preprocess_before.py"
    path.write_text(shown.stdout)
    return path


def measure(reps: int = 1) -> dict[str, Any]:
    png = big_png()
    small = sorted((ROOT / "samples" / "glass").glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        old = before_module(Path(tmp))
        variants = {"after": "-"} | ({"before": str(old)} if old else {})
        cells: dict[str, dict[str, Any]] = {}
        for rep in range(reps):
            for mode in ("preprocess", "/predict"):
                for name, before in variants.items():
                    run = subprocess.run(
                        [PY, "-c", CHILD, mode, str(png), before, str(small)],
                        cwd=ROOT,
                        env={**os.environ, "POWERTOOLS_METRICS_DISABLED": "true"},
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=False,
                    )
                    if run.returncode != 0:
                        raise RuntimeError(f"{mode} {name}: {run.stderr[-2000:]}")
                    out = json.loads(run.stdout.strip().splitlines()[-1])
                    cell = cells.setdefault(f"{mode} {name}", {"peak_mb": [], "extra_mb": []})
                    cell["peak_mb"].append(round(out["peak_mb"], 1))
                    cell["extra_mb"].append(round(out["peak_mb"] - out["base_mb"], 1))
                    cell["result"] = out["result"]
                    print(
                        f"  {mode:<10} {name:<6} rep {rep + 1}: peak {out['peak_mb']:7.1f} MB "
                        f"(+{out['peak_mb'] - out['base_mb']:.1f} MB for the image)",
                        flush=True,
                    )
    return {
        "image": f"{SIZE[0]}x{SIZE[1]} RGBA PNG, {png.stat().st_size:,} bytes",
        "before": BEFORE,
        "cells": {
            name: {key: max(v) if key != "result" else v for key, v in cell.items()}
            for name, cell in cells.items()
        },
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"| one {result['image']} | peak RSS MB | of which for the image MB |",
        "| --- | ---: | ---: |",
    ]
    for name, cell in result["cells"].items():
        lines.append(f"| {name} | {cell['peak_mb']:.0f} | {cell['extra_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    del argv
    result = measure()
    from bench.serving import save_part

    save_part("memory", result)
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
