"""`wastesort drift`: a drift report for a folder of photos or a window of prediction records
(`wastesort.drift` does the math).

    wastesort drift --current FOLDER|URI|FILE [--model URI] [--reference FOLDER] [--json]
                    [--plot PNG] [--since WHEN] [--until WHEN] [--source NAME]

`--current` is a folder of images (walked recursively) or a dataset folder (`wastesort.dataset`:
class folders named as the model's labels, or an `index.csv`), whose labels give a measured
accuracy; each image is classified through `Classifier`. It may instead name prediction records,
read as they are (no re-classification), those of the model's version only: a records prefix
(`s3://bucket/records`, a folder with that layout, or the store above it; `wastesort.records`)
over `--since`/`--until` (default: the last 24 hours) and optionally one `--source` (`api`, a
device id), or a bin's telemetry queue file (`telemetry.sqlite`: its most recent records).
The baseline is `--reference FOLDER` classified the same way when given, else the version's
reference file (a version without a reference file and no `--reference` is a usage error).
Exit 0 whatever the verdict (it is a report), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wastesort import drift
from wastesort.errors import WastesortError

if TYPE_CHECKING:
    from wastesort.classifier import Classifier


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add `drift` to the CLI's commands."""
    parser = commands.add_parser("drift", help="compare a folder of photos with the baseline")
    parser.add_argument("--model", help="registry URI with optional @version/@alias, or .tflite")
    parser.add_argument(
        "--current",
        required=True,
        help="folder of images, dataset folder, records prefix (s3://.../records or a folder), "
        "or a bin's telemetry.sqlite",
    )
    parser.add_argument("--since", help="records from (ISO 8601 UTC, or 6h / 2d ago; default 24h)")
    parser.add_argument("--until", help="records before (ISO 8601 UTC, or 1h ago; default now)")
    parser.add_argument("--source", help="records of this source only (`api`, a device id)")
    parser.add_argument(
        "--reference",
        type=Path,
        help="folder of images for the baseline (default: the version's reference file)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--plot", type=Path, help="write a PNG of the distributions (matplotlib)")
    parser.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    parser.add_argument(
        "--min-window",
        type=int,
        help=f"fewest records judged (default {drift.Thresholds.min_window})",
    )


def _usage(message: str) -> WastesortError:
    return WastesortError(message, code="usage")


@dataclass(frozen=True)
class _Folder:
    window: drift.Window
    failed: int


def _files(root: Path, labels: list[str]) -> tuple[list[Path], list[int] | None]:
    """(image files, their label indices or None): a dataset folder when it has an index or
    its class folders are all model labels; else every image below it, unlabelled."""
    from wastesort.dataset import UNMAPPED, DatasetError, read_folder  # noqa: PLC0415
    from wastesort.preprocess import IMAGE_SUFFIXES  # noqa: PLC0415

    if not root.is_dir():
        raise _usage(f"{root} is not a folder of images")
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    classes = [f for f in folders if f != UNMAPPED]
    if (root / "index.csv").is_file() or (classes and set(classes) <= set(labels)):
        try:
            folder = read_folder(root)
        except DatasetError as exc:
            raise _usage(str(exc)) from None
        index = {name: i for i, name in enumerate(labels)}
        return [root / r.path for r in folder.records], [
            index.get(r.label, -1) for r in folder.records
        ]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files, None


def observe(classifier: Classifier, root: Path) -> _Folder:
    """Classify every image of a folder into a `drift.Window` (unreadable images are counted)."""
    from wastesort.reference import image_stats  # noqa: PLC0415

    files, truth = _files(root, classifier.labels)
    records: list[dict[str, Any]] = []
    failed = 0
    for i, path in enumerate(files):
        try:
            array = classifier.preprocess(path.read_bytes())
        except (OSError, WastesortError):
            failed += 1
            continue
        record = classifier.predict_arrays(array)[0].to_dict(details=True)
        if record["image_stats"] is None:  # no reference file: the same statistics, here
            record["image_stats"] = image_stats(array)
        if truth is not None and truth[i] >= 0:
            record["label"] = classifier.labels[truth[i]]
        records.append(record)
    if not records:
        raise _usage(f"no readable images in {root}")
    return _Folder(drift.Window.from_records(records, classifier.labels), failed)


def run(args: argparse.Namespace) -> int:
    """The CLI's entry: classify, compare, print; exit 0 whatever the verdict."""
    from wastesort.classifier import Classifier  # noqa: PLC0415

    if args.min_window is not None and args.min_window < 2:
        raise _usage("--min-window must be at least 2")
    if args.plot is not None:
        _matplotlib()  # fail before the work, not after it
    classifier = Classifier.load(args.model)
    if args.reference is not None:  # asked for by name: it wins over the reference file
        seen = observe(classifier, args.reference)
        _warn_failed(seen.failed, args.reference)
        baseline = drift.Baseline.from_window(seen.window, classifier.labels, f"{args.reference}")
        if classifier.reference is not None:
            print(
                f"wastesort: note: the baseline is --reference {args.reference}, not the "
                f"reference file of {classifier.version}",
                file=sys.stderr,
            )
    elif classifier.reference is not None:
        baseline = drift.Baseline.from_reference(classifier.reference)
    else:
        raise _usage(
            f"model {classifier.version} has no reference file: give --reference FOLDER "
            "(photos like the ones it was validated on)"
        )
    current = records_window(classifier, args) or observe(classifier, Path(args.current))
    _warn_failed(current.failed, args.current)
    limits = drift.Thresholds()
    if args.min_window is not None:
        limits = drift.Thresholds(min_window=args.min_window)
    result = drift.report(
        baseline,
        current.window,
        uncertain_threshold=classifier.entry.uncertain_threshold,
        thresholds=limits,
        seed=args.seed,
    )
    data = {"model_version": classifier.version, **result.to_dict()}
    if args.plot is not None:
        plot(baseline, current.window, args.plot, title=f"{classifier.version}: {result.verdict}")
    print(json.dumps(data) if args.json else _text(data))
    return 0


def _when(value: str | None, now: datetime, default: timedelta) -> datetime:
    """`--since`/`--until`: ISO 8601 (UTC unless it says), or an age like `6h`, `2d`, `30m`."""
    if value is None:
        return now - default
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([mhd])", value.strip())
    try:
        if match:
            unit = {"m": "minutes", "h": "hours", "d": "days"}[match[2]]
            return now - timedelta(**{unit: float(match[1])})
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):  # OverflowError: an age before year 1 (`99999999d`)
        raise _usage(f"{value!r} is not a time (ISO 8601, or an age like 6h or 2d)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def records_window(classifier: Classifier, args: argparse.Namespace) -> _Folder | None:
    """The window `--current` names when it names prediction records (a records prefix or a
    bin's queue file); None when it is a folder of images."""
    from wastesort import record_sources, records  # noqa: PLC0415

    location = str(args.current)
    if record_sources.is_queue_file(location):
        found = record_sources.read_queue_file(location)
        where = location
    else:
        store = record_sources.records_store(location)
        if store is None:
            return None
        now = datetime.now(UTC)
        until = _when(args.until, now, timedelta(0))
        since = _when(args.since, until, timedelta(hours=24))
        found = list(records.read_records(store, since=since, until=until, source=args.source))
        where = f"{location} from {since:%Y-%m-%dT%H:%MZ} to {until:%Y-%m-%dT%H:%MZ}"
    mine = [r for r in found if r.get("model_version") == classifier.version]
    if args.source is not None:
        mine = [r for r in mine if r.get("source") == args.source]
    if not mine:
        others = sorted({str(r.get("model_version")) for r in found})
        held = f" (it holds {', '.join(others)})" if others else ""
        raise _usage(f"no records of {classifier.version} in {where}{held}")
    return _Folder(drift.Window.from_records(mine, classifier.labels), 0)


def _warn_failed(failed: int, root: Path | str) -> None:
    if failed:
        print(f"wastesort: {failed} images in {root} could not be read", file=sys.stderr)


def _text(data: dict[str, Any]) -> str:
    lines = [
        f"verdict: {data['verdict']}  ({data['n']} images vs a baseline of {data['baseline_n']}: "
        f"{data['baseline']})"
    ]
    if data["reason"]:
        lines.append(f"reason: {data['reason']}")
    accuracy = data["expected_accuracy"]
    lines.append(f"expected accuracy: {accuracy['current']} (baseline {accuracy['baseline']})")
    if accuracy["measured"] is not None:
        lines.append(f"measured accuracy: {accuracy['measured']}")
    for name, test in data["tests"].items():
        if test["verdict"] == drift.SKIPPED:
            lines.append(f"  {name:<18} skipped: {test['reason']}")
        else:
            lines.append(
                f"  {name:<18} {test['verdict']:<6} statistic {test['statistic']:<10} "
                f"p {test['p_value']:<10} ({test['threshold']})"
            )
    return "\n".join(lines)


def _matplotlib() -> Any:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise _usage(
            "--plot needs matplotlib: pip install 'wastesort[train]' (or matplotlib)"
        ) from None
    return plt


def plot(baseline: drift.Baseline, window: drift.Window, out: Path, *, title: str = "") -> None:
    """One PNG: per-class score distributions (and the embedding's first two PCA components
    when both sides have them), baseline vs current."""
    plt = _matplotlib()
    labels = baseline.labels
    extra = baseline.embeddings is not None and window.embeddings is not None
    columns = 3
    rows = -(-(len(labels) + extra) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for i, name in enumerate(labels):
        ax = axes.flat[i]
        if baseline.scores is not None:
            ax.hist(baseline.scores[:, i], bins=bins, density=True, alpha=0.5, label="baseline")
        ax.hist(window.scores[:, i], bins=bins, density=True, alpha=0.5, label="current")
        ax.set_title(f"score: {name}")
        ax.set_yscale("symlog")
    axes.flat[0].legend()
    if extra:
        ax = axes.flat[len(labels)]
        ax.scatter(*baseline.embeddings[:, :2].T, s=4, alpha=0.4, label="baseline")  # type: ignore[index]
        ax.scatter(*window.embeddings[:, :2].T, s=4, alpha=0.4, label="current")  # type: ignore[index]
        ax.set_title("embedding: PC1 vs PC2")
        ax.legend()
    for ax in list(axes.flat)[len(labels) + extra :]:
        ax.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=80)
    except OSError as exc:
        raise _usage(f"cannot write {out}: {exc.strerror}") from None
    finally:
        plt.close(figure)
