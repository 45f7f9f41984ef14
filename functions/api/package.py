"""Build the Lambda deployment package without Docker.

    python -m functions.api.package --arch arm64     # or x86_64

pip downloads manylinux wheels for the Lambda runtime (python3.12; `--platform` for every
manylinux tag the wheels use, since pip does not widen them, and `--only-binary=:all:`) into
`build/wheels/` (a cache: later builds need no network), installs them into
`build/lambda/<arch>/` with the `wastesort/` and `functions/` trees, prunes what the function
never loads, and zips it to `build/lambda/api-<arch>.zip`. It prints the sizes and writes them
to `build/lambda/<arch>.json`.

What is pruned, and why it is safe (tests/api/test_api_package.py classifies with the pruned
x86_64 package in a clean process to prove it):
- boto3, botocore and their dependencies (s3transfer, jmespath, dateutil, six, urllib3): the
  Lambda runtime has them.
- ml_dtypes, protobuf, tqdm, flatbuffers: ai-edge-litert requires them for its converter and
  tools; the Interpreter never imports them. Powertools' features other than logging, metrics
  and tracing (`event_handler`, `utilities/*`).
- ai-edge-litert: everything but the Interpreter (the WebGPU accelerator, the compiled-model
  API and its protobufs, converter/analyzer/calibration wrappers, vendor plugins, AOT tools).
- Pillow: the extension modules for AVIF, fonts, colour management, Tk, ImageMath/Morph, and
  the vendored libraries only they need (found from the ELF DT_NEEDED entries).
- numpy's random, fft, polynomial and ma subpackages (lazily loaded, never used here), its
  test-only extension modules, f2py and pyinstaller hooks.
- every `tests/`, `__pycache__`, `*.pyi`, C headers.

Bytecode: Lambda's /var/task is read-only, so without shipped `.pyc` every cold start compiles
every module it imports (measured here: 3.8 s instead of 0.9 s to the first answer). The
package is compiled (`unchecked-hash` .pyc, +11 MB) by a Python of the runtime's version: the
running one, `python3.12` on PATH or pyenv's, or `--compile-with PATH`; without one the build
says so and ships sources only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
ARCHES = {"arm64": "aarch64", "x86_64": "x86_64"}
PYTHON_VERSION = "3.12"
"""The Lambda runtime (infra: python3.12)."""

# What the function imports, pinned to the versions the tests ran with (this venv).
REQUIREMENTS = (
    "numpy",
    "pillow",
    "pydantic",
    "pydantic-settings",
    "ai-edge-litert",
    "fastapi",
    "mangum",
    "python-multipart",
    "httpx",
    "aws-lambda-powertools",
    "aws-xray-sdk",  # Powertools' Tracer (the function has X-Ray tracing on)
)
IN_RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
UNUSED_DISTS = ("ml_dtypes", "protobuf", "tqdm", "flatbuffers")
"""ai-edge-litert's requirements for its converter and model tools; its Interpreter imports none."""
POWERTOOLS_KEEP = {"__init__.py", "jmespath_utils", "typing"}
"""Of `aws_lambda_powertools/utilities`, what Logger/Metrics/Tracer import (`event_handler`,
the parser, idempotency, batch ... are other features of the library)."""
SOURCES = ("wastesort", "functions")

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


@dataclass
class Report:
    arch: str
    python_version: str
    unpruned_bytes: int = 0
    pruned_bytes: int = 0
    zip_bytes: int = 0
    directory: str = ""
    zip_path: str = ""
    compiled: bool = False
    largest: dict[str, int] = field(default_factory=dict)

    def mb(self, key: str) -> float:
        return round(getattr(self, key) / 1e6, 1)


def platform_tags(arch: str) -> list[str]:
    """Every manylinux tag up to Amazon Linux 2023's glibc 2.34 (pip does not widen tags)."""
    machine = ARCHES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(34, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def pinned(names: tuple[str, ...] = REQUIREMENTS) -> list[str]:
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our argv


def install(
    requirements: list[str], target: Path, *, arch: str, python_version: str, wheels: Path
) -> None:
    """pip install for the Lambda platform, from the wheel cache when it has everything."""
    flags = [
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *[arg for tag in platform_tags(arch) for arg in ("--platform", tag)],
    ]
    wheels.mkdir(parents=True, exist_ok=True)
    offline = ["install", "--no-index", "--find-links", str(wheels), "--target", str(target)]
    try:
        _pip(*offline, "--quiet", *flags, *requirements)
    except subprocess.CalledProcessError:
        _pip("download", "--quiet", "--dest", str(wheels), *flags, *requirements)
        _pip(*offline, "--quiet", *flags, *requirements)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _remove(path: Path) -> None:
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
        _remove(info)


def prune(target: Path) -> None:
    for name in (*IN_RUNTIME, *UNUSED_DISTS):
        remove_dist(target, name)
    _prune_generic(target)
    _prune_packages(target)
    prune_vendored_libs(target)
    for path in target.rglob("RECORD"):  # lists removed files; nothing reads it at runtime
        if path.parent.name.endswith(".dist-info"):
            path.unlink()


def _prune_generic(target: Path) -> None:
    for path in sorted(target.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in DROP_DIRS and ".dist-info" not in str(path.parent):
            _remove(path)
        elif path.is_file() and path.suffix in DROP_SUFFIXES:
            path.unlink()


def _prune_packages(target: Path) -> None:
    litert = target / "ai_edge_litert"
    drops = [p for p in litert.glob("*.so") if p.name not in LITERT_KEEP]
    drops += [p for p in litert.glob("*.py") if p.name not in LITERT_KEEP_PY]
    drops += [litert / name for name in LITERT_DROP_DIRS]
    drops += [p for m in PIL_DROP_MODULES for p in (target / "PIL").glob(f"{m}.*so")]
    drops += [p for m in NUMPY_TEST_MODULES for p in (target / "numpy/_core").glob(f"{m}.*so")]
    drops += [target / "numpy" / name for name in NUMPY_UNUSED]
    utilities = target / "aws_lambda_powertools" / "utilities"
    if utilities.exists():
        drops += [p for p in utilities.iterdir() if p.name not in POWERTOOLS_KEEP]
    drops.append(target / "aws_lambda_powertools" / "event_handler")
    for path in drops:
        _remove(path)


def python_version_of(python: str) -> str:
    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    result = subprocess.run(  # noqa: S603 - our argv
        [python, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def find_python(version: str = PYTHON_VERSION) -> str | None:
    """An interpreter of `version`: this one, `pythonX.Y` on PATH, or pyenv's; else None."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(
            str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")
        ),
    ]
    for candidate in filter(None, candidates):
        try:
            if python_version_of(candidate) == version:
                return candidate
        except (OSError, subprocess.CalledProcessError):
            continue
    return None


def compile_bytecode(target: Path, python: str) -> None:
    """`.pyc` beside every module, valid without mtime checks (the zip may not keep them)."""
    subprocess.run(  # noqa: S603 - our argv
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(target),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def copy_sources(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    for name in SOURCES:
        _remove(target / name)
        shutil.copytree(ROOT / name, target / name, ignore=ignore)


def write_zip(directory: Path, dest: Path) -> None:
    """Deterministic: sorted names, fixed timestamps, files 0644 and executables 0755."""
    dest.unlink(missing_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(
                str(path.relative_to(directory)), date_time=(2020, 1, 1, 0, 0, 0)
            )
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())


def largest(target: Path, count: int = 8) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for child in target.iterdir():
        if child.name.endswith(".dist-info"):
            continue
        key = child.name.removesuffix(".libs") if child.is_dir() else child.name
        sizes[key] = sizes.get(key, 0) + (
            size_of(child) if child.is_dir() else child.stat().st_size
        )
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:count])


def build(
    arch: str = "arm64",
    *,
    python_version: str = PYTHON_VERSION,
    out: Path = BUILD / "lambda",
    wheels: Path | None = None,
    do_prune: bool = True,
    make_zip: bool = True,
    compile_with: str | None = None,
) -> Report:
    """Build `out/<arch>/` (and `out/api-<arch>.zip`); returns the sizes.

    Args:
        arch: `arm64` or `x86_64`.
        python_version: the runtime's Python (3.12 for Lambda; tests build for the local one).
        out: where the package directory and zip go.
        wheels: the wheel cache (default `build/wheels/<arch>-cp<version>`).
        do_prune: prune (False gives the unpruned package, for comparison).
        make_zip: also write the zip.
        compile_with: a Python of `python_version` to compile `.pyc` with (default: found by
            `find_python`; none found: no bytecode, with a warning).
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {sorted(ARCHES)}")
    tag = python_version.replace(".", "")
    wheels = wheels or BUILD / "wheels" / f"{arch}-cp{tag}"
    target = out / arch if python_version == PYTHON_VERSION else out / f"{arch}-cp{tag}"
    _remove(target)
    target.mkdir(parents=True)
    install(pinned(), target, arch=arch, python_version=python_version, wheels=wheels)
    copy_sources(target)
    report = Report(arch=arch, python_version=python_version, directory=str(target))
    report.unpruned_bytes = size_of(target)
    if do_prune:
        prune(target)
    python = compile_with or find_python(python_version)
    if python and python_version_of(python) == python_version:
        compile_bytecode(target, python)
        report.compiled = True
    else:
        print(
            f"warning: no Python {python_version} to compile .pyc with (--compile-with); "
            "the package ships sources only and every cold start compiles them",
            file=sys.stderr,
        )
    report.pruned_bytes = size_of(target)
    report.largest = largest(target)
    if make_zip:
        zip_path = out / f"api-{target.name}.zip"
        write_zip(target, zip_path)
        report.zip_bytes = zip_path.stat().st_size
        report.zip_path = str(zip_path)
    (out / f"{target.name}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.api.package", description=__doc__)
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64")
    parser.add_argument("--python-version", default=PYTHON_VERSION)
    parser.add_argument("--out", type=Path, default=BUILD / "lambda")
    parser.add_argument("--no-prune", action="store_true", help="keep everything (to compare)")
    parser.add_argument("--compile-with", help=f"a Python {PYTHON_VERSION} to compile .pyc with")
    args = parser.parse_args(argv)
    report = build(
        args.arch,
        python_version=args.python_version,
        out=args.out,
        do_prune=not args.no_prune,
        compile_with=args.compile_with,
    )
    print(
        f"{report.directory}: {report.mb('pruned_bytes')} MB unzipped "
        f"({report.mb('unpruned_bytes')} MB before pruning; "
        f"{'with' if report.compiled else 'no'} .pyc), "
        f"{report.zip_path}: {report.mb('zip_bytes')} MB"
    )
    for name, size in report.largest.items():
        print(f"  {name:<28} {size / 1e6:6.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
