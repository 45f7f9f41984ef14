"""What the Lambda package drops after pip installs it, and why each drop is safe.

tests/api/test_api_package.py classifies with the pruned x86_64 package in a clean process to
prove it:
- boto3, botocore and their dependencies (s3transfer, jmespath, dateutil, six, urllib3): the
  Lambda runtime has them.
- ml_dtypes, protobuf, tqdm, flatbuffers: ai-edge-litert requires them for its converter and
  tools; the Interpreter never imports them. Powertools' features other than logging, metrics
  and tracing (`event_handler`, `utilities/*`).
- ai-edge-litert: everything but the Interpreter (the WebGPU accelerator, the compiled-model
  API and its protobufs, converter/analyzer/calibration wrappers, vendor plugins, AOT tools).
- Pillow: the extension modules for AVIF, fonts, colour management, Tk, ImageMath/Morph, and
  the vendored libraries only they need (found from the ELF DT_NEEDED entries).
- numpy's random, fft, polynomial and ma subpackages (lazily loaded, never used by the API;
  the drift package keeps random and ma, `numpy_keep`), its test-only extension modules, f2py
  and pyinstaller hooks.
- every `tests/`, `__pycache__`, `*.pyi`, C headers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

IN_RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
UNUSED_DISTS = ("ml_dtypes", "protobuf", "tqdm", "flatbuffers")
"""ai-edge-litert's requirements for its converter and model tools; its Interpreter imports none."""
POWERTOOLS_KEEP = {"__init__.py", "jmespath_utils", "typing"}
"""Of `aws_lambda_powertools/utilities`, what Logger/Metrics/Tracer import (`event_handler`,
the parser, idempotency, batch ... are other features of the library)."""
LITERT_KEEP = {
    "_pywrap_litert_interpreter_wrapper.so",
    "libpywrap_litert_common.so",
    "libLiteRt.so",
}
LITERT_KEEP_PY = {"__init__.py", "interpreter.py", "metrics_interface.py", "metrics_portable.py"}
LITERT_DROP_DIRS = ("tools", "vendors", "aot", "tflite")
PIL_DROP_MODULES = (
    "_avif",
    "_imagingcms",
    "_imagingft",
    "_imagingtk",
    "_imagingmath",
    "_imagingmorph",
)
DROP_DIRS = ("tests", "test", "__pycache__", "include", "f2py", "_pyinstaller")
NUMPY_TEST_MODULES = ("_simd", "_multiarray_tests", "_umath_tests", "_rational_tests")
NUMPY_UNUSED = ("random", "fft", "polynomial", "ma")
"""numpy subpackages `import numpy` does not load and nothing on the serving path imports."""
DROP_SUFFIXES = (".pyi", ".pyc", ".pxd", ".h", ".c", ".cpp")


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _dist_infos(target: Path, name: str) -> list[Path]:
    normal = name.replace("-", "_").lower()
    return [p for p in target.glob("*.dist-info") if p.name.lower().startswith(normal + "-")]


def needed(library: Path) -> set[str]:
    """The DT_NEEDED sonames of an ELF file (readelf reads any architecture)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        raise RuntimeError("readelf (binutils) is needed to prune vendored libraries")
    result = subprocess.run(  # noqa: S603 - our argv
        [readelf, "-d", str(library)], capture_output=True, text=True, check=False
    )
    return {
        line.split("[", 1)[1].split("]", 1)[0]
        for line in result.stdout.splitlines()
        if "(NEEDED)" in line
    }


def prune_vendored_libs(target: Path) -> list[str]:
    """Drop libraries in `*.libs/` (auditwheel's vendored copies) that no remaining extension
    module or kept library needs. They are always linked by DT_NEEDED, never dlopen'ed."""
    vendored = {p.name: p for d in target.glob("*.libs") for p in d.iterdir()}
    roots = [
        p for p in target.rglob("*.so*") if p.is_file() and p.parent.name.endswith(".libs") is False
    ]
    keep: set[str] = set()
    todo = [soname for root in roots for soname in needed(root)]
    while todo:
        soname = todo.pop()
        if soname in vendored and soname not in keep:
            keep.add(soname)
            todo.extend(needed(vendored[soname]))
    dropped = sorted(set(vendored) - keep)
    for name in dropped:
        vendored[name].unlink()
    return dropped


def remove_dist(target: Path, name: str) -> None:
    """Uninstall a distribution from a `--target` directory by its RECORD."""
    for info in _dist_infos(target, name):
        record = info / "RECORD"
        lines = record.read_text().splitlines() if record.exists() else []
        for line in lines:
            path = target / line.split(",", 1)[0]
            if path.is_file():
                path.unlink()
        for line in lines:  # then the folders the files were in, when empty
            parent = (target / line.split(",", 1)[0]).parent
            while parent != target and parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        remove_path(info)


def prune(target: Path, *, numpy_keep: tuple[str, ...] = ()) -> None:
    """Everything in this module's docstring, on a `pip install --target` folder.

    Args:
        target: the folder.
        numpy_keep: of `NUMPY_UNUSED`, what this package does import (the drift package's
            statistics draw seeded permutations from `numpy.random`; `np.median` loads
            `numpy.ma`).
    """
    for name in (*IN_RUNTIME, *UNUSED_DISTS):
        remove_dist(target, name)
    prune_generic(target)
    prune_packages(target, numpy_keep=numpy_keep)
    prune_vendored_libs(target)
    for path in target.rglob("RECORD"):  # lists removed files; nothing reads it at runtime
        if path.parent.name.endswith(".dist-info"):
            path.unlink()


def prune_generic(target: Path) -> None:
    """What no package needs at runtime: `tests/`, caches, stubs, headers, C sources."""
    for path in sorted(target.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in DROP_DIRS and ".dist-info" not in str(path.parent):
            remove_path(path)
        elif path.is_file() and path.suffix in DROP_SUFFIXES:
            path.unlink()


def prune_packages(target: Path, *, numpy_keep: tuple[str, ...] = ()) -> None:
    """The parts of litert, Pillow, numpy and Powertools the function never imports."""
    litert = target / "ai_edge_litert"
    drops = [p for p in litert.glob("*.so") if p.name not in LITERT_KEEP]
    drops += [p for p in litert.glob("*.py") if p.name not in LITERT_KEEP_PY]
    drops += [litert / name for name in LITERT_DROP_DIRS]
    drops += [p for m in PIL_DROP_MODULES for p in (target / "PIL").glob(f"{m}.*so")]
    drops += [p for m in NUMPY_TEST_MODULES for p in (target / "numpy/_core").glob(f"{m}.*so")]
    drops += [target / "numpy" / name for name in NUMPY_UNUSED if name not in numpy_keep]
    utilities = target / "aws_lambda_powertools" / "utilities"
    if utilities.exists():
        drops += [p for p in utilities.iterdir() if p.name not in POWERTOOLS_KEEP]
    drops.append(target / "aws_lambda_powertools" / "event_handler")
    for path in drops:
        remove_path(path)
