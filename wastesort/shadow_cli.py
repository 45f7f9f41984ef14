"""`wastesort shadow`: how a challenger would have decided on field photos (`wastesort.shadow`
does the comparison).

    wastesort shadow --champion URI@production --challenger URI@candidate --captures SOURCE
                     [--workers N] [--json] [--sheet FILE.png] [--worst N]
    wastesort shadow --from-results CHAMPION.jsonl CHALLENGER.jsonl [--captures SOURCE] ...

SOURCE is a capture store (a folder holding `captures/`, or `s3://bucket/prefix`: its label
events give the labels), a dataset folder (`wastesort.dataset`: an `index.csv`, or class folders
named as the models' labels) or any folder of images (unlabelled). Both models score every photo
through `wastesort.bulk.classify_many`. With `--from-results`, the records come from two JSON-lines
results files instead (`wastesort classify --json`, or a bulk job's results), so a capture prefix
scored twice in the cloud gives the same report; SOURCE then only adds the labels. Exit 0 with a
report, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from wastesort import contact_sheet, shadow
from wastesort.bulk import S3_SCHEME, ItemReader, classify_many, list_items, usage_error
from wastesort.errors import WastesortError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add `shadow` to the CLI's commands."""
    parser = commands.add_parser(
        "shadow", help="how a challenger would have decided on the champion's photos"
    )
    parser.add_argument("--champion", help="registry URI@ref or .tflite (e.g. models@production)")
    parser.add_argument("--challenger", help="registry URI@ref or .tflite (e.g. models@candidate)")
    parser.add_argument(
        "--captures",
        metavar="SOURCE",
        help="capture store (folder or s3://bucket/prefix), dataset folder or folder of images",
    )
    parser.add_argument(
        "--from-results",
        nargs=2,
        type=Path,
        metavar=("CHAMPION.jsonl", "CHALLENGER.jsonl"),
        help="compare two results files (JSON lines of records) instead of scoring",
    )
    parser.add_argument("--workers", type=_positive, default=1, help="scoring processes")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--sheet", type=Path, help="write the largest disagreements as a PNG")
    parser.add_argument(
        "--worst", type=_positive, default=shadow.WORST, help="photos of largest disagreement"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# --- the photos -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photos:
    """What to score and what people said about it."""

    source: str
    items: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    """item -> label; for a capture store, capture id -> label."""

    def label(self, path: str) -> str | None:
        """A record's label: by its path, else by the capture id its file is named for."""
        return self.labels.get(path) or self.labels.get(PurePosixPath(path).stem)


def _capture_store(uri: str) -> Photos:
    """Every capture's photo, and its latest label (reviewers' and callers' alike)."""
    from wastesort.capture import CaptureStore, key_of  # noqa: PLC0415
    from wastesort.export import latest_label  # noqa: PLC0415

    store = CaptureStore.from_uri(uri)
    root = store.uri.rstrip("/")
    items = [f"{root}/{key_of(c.id)}.jpg" for c in store.captures()]
    labels = {}
    for capture_id, events in store.all_labels().items():
        label, _ = latest_label(events, reviewers_only=False)
        if label is not None:
            labels[capture_id] = label
    return Photos(uri, items, labels)


def _dataset(root: Path) -> Photos:
    """A dataset folder: its photos of the classes and of none of them, with their labels."""
    from wastesort.dataset import DatasetError, read_folder  # noqa: PLC0415

    try:
        folder = read_folder(root)
    except DatasetError as exc:
        raise usage_error(str(exc)) from None
    records = [*folder.records, *folder.unmapped]
    labels = {str(root / r.path): r.label for r in records}
    return Photos(str(root), list(labels), labels)


def find_photos(source: str, classes: Sequence[str]) -> Photos:
    """The photos (and labels) of `--captures`: a capture store, a dataset folder (an index, or
    class folders that are all among `classes`), else every image below the folder.

    Raises:
        WastesortError: (code `usage`) the source does not exist or is not a folder.
    """
    from wastesort.dataset import INDEX, UNMAPPED  # noqa: PLC0415

    if source.startswith(S3_SCHEME):
        return _capture_store(source)
    root = Path(source.removeprefix("file://"))
    if not root.is_dir():
        raise usage_error(f"--captures {source}: not a folder (nor s3://bucket/prefix)")
    if (root / "captures").is_dir():
        return _capture_store(str(root))
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    folders.discard(UNMAPPED)
    if (root / INDEX).is_file() or (folders and folders <= set(classes)):
        return _dataset(root)
    return Photos(str(root), list_items([str(root)]))


def _is_record(record: Any) -> bool:
    """A `to_record` dict: a path and either an error or the fields the report reads."""
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        return False
    if "error" in record:
        return True
    fields = ("decision", "predicted_class", "confidence")
    return all(k in record for k in fields) and isinstance(record.get("all_confidences"), dict)


def read_results(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines results file: one record per line (blank lines skipped).

    Raises:
        WastesortError: (code `usage`) the file cannot be read or a line is not a record.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not _is_record(record):
            raise usage_error(f"{path} line {number} is not a classification record")
        records.append(record)
    return records


# --- the report ---------------------------------------------------------------------------------


def build(
    champion: str,
    challenger: str,
    captures: str,
    *,
    workers: int = 1,
    worst: int = shadow.WORST,
) -> tuple[dict[str, Any], Photos]:
    """Score the photos of `captures` with both models; (the report, the photos).

    Raises:
        ModelError: a model cannot be loaded. WastesortError (code `usage`): no photos.
    """
    from wastesort.classifier import Classifier  # noqa: PLC0415

    models = [Classifier.load(uri) for uri in (champion, challenger)]  # each loaded once
    photos = find_photos(captures, sorted({*models[0].labels, *models[1].labels}))
    if not photos.items:
        raise usage_error(f"no images in {captures}")
    # In this process the loaded models classify; workers load their own from the URI.
    records = [
        list(classify_many(clf if workers == 1 else uri, photos.items, workers=workers))
        for clf, uri in zip(models, (champion, challenger), strict=True)
    ]
    return _report(records[0], records[1], photos, worst), photos


def _report(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], photos: Photos, worst: int
) -> dict[str, Any]:
    paths = {r["path"] for r in (*old, *new)}
    labels = {p: label for p in paths if (label := photos.label(p)) is not None}
    try:
        data = shadow.report(old, new, labels, worst=worst)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    return {"source": photos.source, **data}


def _answer(side: Mapping[str, Any]) -> str:
    """`glass 0.91`, or `uncertain (glass 0.41)`."""
    best = f"{side['predicted_class']} {side['confidence']:.2f}"
    return best if side["decision"] == side["predicted_class"] else f"{side['decision']} ({best})"


def write_sheet(data: Mapping[str, Any], out: Path) -> Path:
    """The largest disagreements as a contact sheet: each photo with both decisions (A is the
    champion, B the challenger) and its label when known."""
    tiles, reader = [], ItemReader()
    for d in data["disagreements"]:
        try:
            image: bytes | None = reader.read(d["path"])
        except (OSError, WastesortError):
            image = None
        old, new = d[shadow.CHAMPION], d[shadow.CHALLENGER]
        tiles.append(
            contact_sheet.Tile(
                image,
                [
                    PurePosixPath(d["path"]).name,
                    f"A {_answer(old)}",
                    f"B {_answer(new)}",
                    f"label: {d['label'] or '?'}",
                ],
            )
        )
    title = (
        f"A = {data[shadow.CHAMPION]['version']}, B = {data[shadow.CHALLENGER]['version']}: "
        f"agreement {(data['agreement'] or 0) * 100:.1f}% of {data['n']}"
    )
    return contact_sheet.write(tiles, out, title=title, lines=4)


def run(args: argparse.Namespace) -> int:
    """The CLI's entry: score (or read) both sides, compare, print; exit 0 with a report."""
    if args.sheet is not None and not args.sheet.parent.is_dir():  # fail before the work
        raise usage_error(f"--sheet {args.sheet}: no folder {args.sheet.parent}")
    if args.from_results:
        if args.champion or args.challenger:
            raise usage_error(
                "--from-results reads both models' records: drop --champion/--challenger"
            )
        old, new = (read_results(p) for p in args.from_results)
        classes = sorted({c for r in (*old, *new) for c in r.get("all_confidences", ())})
        photos = find_photos(args.captures, classes) if args.captures else Photos("", [])
        photos = Photos(
            photos.source or " vs ".join(map(str, args.from_results)), [], photos.labels
        )
        data = _report(old, new, photos, args.worst)
    else:
        missing = [
            f"--{name}"
            for name in ("champion", "challenger", "captures")
            if not getattr(args, name)
        ]
        if missing:
            raise usage_error(f"shadow needs {', '.join(missing)} (or --from-results A B)")
        data, _ = build(
            args.champion, args.challenger, args.captures, workers=args.workers, worst=args.worst
        )
    if data["n"] == 0:
        raise usage_error(f"no photo was answered by both models ({data['source']})")
    if args.sheet is not None:
        data["sheet"] = str(write_sheet(data, args.sheet))
    print(json.dumps(data) if args.json else "\n".join(shadow.render(data)))
    return 0
