"""Build the Lambda deployment package without Docker.

    python -m tools.lambda_zip --arch arm64     # or x86_64
    python -m tools.lambda_zip --package drift  # the drift watch's small package

pip downloads manylinux wheels for the Lambda runtime (python3.12; `--platform` for every
manylinux tag the wheels use, since pip does not widen them, and `--only-binary=:all:`) into
`build/wheels/` (a cache: later builds need no network), installs them into
`build/lambda/<arch>/` with the `wastesort/` and `functions/` trees (nothing else of the
repository: not `tools/`, not tests), prunes what the function never loads
(`tools.lambda_prune`, which says why each drop is safe), and zips it to
`build/lambda/api-<arch>.zip`. It prints the sizes and writes them to `build/lambda/<arch>.json`.
`--package drift` builds the drift watch's package the same way, from its own short lists
(`PACKAGES`), into `build/lambda/drift-<arch>/` and `drift-<arch>.zip`.

Bytecode: Lambda's /var/task is read-only, so without shipped `.pyc` every cold start compiles
every module it imports (measured here: 3.8 s instead of 0.9 s to the first answer). The
package is compiled (`unchecked-hash` .pyc, +11 MB) by a Python of the runtime's version: the
running one, `python3.12` on PATH or pyenv's, or `--compile-with PATH`; without one the build
says so and ships sources only.

The public functions (`build`, `install`, `copy_sources`, `size_of`, ...) are what the serving
benchmarks (`bench/serving.py`) compose to size other packages the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tools.lambda_prune import prune, remove_path

ROOT = Path(__file__).resolve().parents[1]
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
SOURCES = ("wastesort", "functions")
"""The repository trees the function imports: the only ones copied into the package."""


@dataclass(frozen=True)
class PackageSpec:
    """One deployment package: what pip installs, what of the repository is copied (trees or
    single files), and which of numpy's optional subpackages it keeps."""

    requirements: tuple[str, ...]
    sources: tuple[str, ...]
    numpy_keep: tuple[str, ...] = ()


PACKAGES = {
    "api": PackageSpec(REQUIREMENTS, SOURCES),
    "drift": PackageSpec(
        # numpy for the statistics, pydantic for the manifest, Powertools' logger and EMF
        # provider; boto3 is the runtime's. No Pillow, FastAPI or TFLite runtime.
        ("numpy", "pydantic", "aws-lambda-powertools"),
        (
            "wastesort",
            "functions/__init__.py",
            "functions/api/__init__.py",
            "functions/api/metric_names.py",
            "functions/drift",
        ),
        # wastesort.drift_stats draws seeded permutations; np.median imports numpy.ma
        numpy_keep=("random", "ma"),
    ),
}
"""`api`: the API function and its pre-traffic hook. `drift`: the scheduled drift and fleet
watch (`functions.drift.handler`)."""


@dataclass
class Report:
    """What a build made and its sizes in bytes (also written to `<out>/<arch>.json`)."""

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
    """`name==version` as installed here, so the package runs what the tests ran."""
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
    requirements: list[str],
    target: Path,
    *,
    arch: str,
    python_version: str,
    wheels: Path,
    find_links: Sequence[Path] = (),
) -> None:
    """pip install for the Lambda platform, from the wheel caches when they have everything.

    Args:
        requirements: pip requirement strings (`pinned()` gives the function's own).
        target: the folder to install into (`pip install --target`).
        arch: `arm64` or `x86_64`.
        python_version: the runtime's Python, e.g. `3.12`.
        wheels: the wheel cache; what is missing is downloaded into it, once.
        find_links: other wheel caches to install from (never written).
    """
    flags = [
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *[arg for tag in platform_tags(arch) for arg in ("--platform", tag)],
    ]
    wheels.mkdir(parents=True, exist_ok=True)
    links = [arg for d in (wheels, *find_links) for arg in ("--find-links", str(d))]
    offline = ["install", "--no-index", *links, "--target", str(target)]
    try:
        _pip(*offline, "--quiet", *flags, *requirements)
    except subprocess.CalledProcessError:
        _pip("download", "--quiet", "--dest", str(wheels), *flags, *requirements)
        _pip(*offline, "--quiet", *flags, *requirements)


def size_of(path: Path) -> int:
    """Bytes of the files under `path` (links not followed)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


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


def copy_sources(target: Path, sources: Sequence[str] = SOURCES) -> None:
    """Copy `sources` (trees or files) from the repository into `target`, without caches or
    tests."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    for name in sources:
        remove_path(target / name)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target / name, ignore=ignore)
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


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
    package: str = "api",
) -> Report:
    """Build `out/<arch>/` (and `out/api-<arch>.zip`), or for another package
    `out/<package>-<arch>/` (and `out/<package>-<arch>.zip`); returns the sizes.

    Args:
        arch: `arm64` or `x86_64`.
        python_version: the runtime's Python (3.12 for Lambda; tests build for the local one).
        out: where the package directory and zip go.
        wheels: the wheel cache (default `build/wheels/<arch>-cp<version>`).
        do_prune: prune (False gives the unpruned package, for comparison).
        make_zip: also write the zip.
        compile_with: a Python of `python_version` to compile `.pyc` with (default: found by
            `find_python`; none found: no bytecode, with a warning).
        package: a name in `PACKAGES`.
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {sorted(ARCHES)}")
    spec = PACKAGES[package]
    tag = python_version.replace(".", "")
    wheels = wheels or BUILD / "wheels" / f"{arch}-cp{tag}"
    name = arch if python_version == PYTHON_VERSION else f"{arch}-cp{tag}"
    target = out / (name if package == "api" else f"{package}-{name}")
    remove_path(target)
    target.mkdir(parents=True)
    requirements = pinned(spec.requirements)
    install(requirements, target, arch=arch, python_version=python_version, wheels=wheels)
    copy_sources(target, spec.sources)
    report = Report(arch=arch, python_version=python_version, directory=str(target))
    report.unpruned_bytes = size_of(target)
    if do_prune:
        prune(target, numpy_keep=spec.numpy_keep)
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
        zip_path = out / (f"api-{target.name}.zip" if package == "api" else f"{target.name}.zip")
        write_zip(target, zip_path)
        report.zip_bytes = zip_path.stat().st_size
        report.zip_path = str(zip_path)
    (out / f"{target.name}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.lambda_zip", description=__doc__)
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64")
    parser.add_argument("--package", choices=sorted(PACKAGES), default="api")
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
        package=args.package,
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
