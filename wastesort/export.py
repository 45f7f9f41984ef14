"""`wastesort dataset export`: labelled captures as a dataset folder that training reads.

    wastesort dataset export --captures URI --out DIR [--since DATE] [--reviewers-only]

The output has the shape of every dataset folder (`wastesort.dataset`): `<label>/<id>.jpg` plus
`index.csv` (`group` = source + day, so the frames of one bin on one day stay on one side of a
split), `not_waste` under `unmapped/not_waste/` with its own index, and a README with the counts.
A capture's label is its latest label event (feedback counts unless `--reviewers-only`).

The folder is a function of the store and the options alone: run twice, it is the same bytes
(the README's time is the newest label's, not the clock's). It is incremental: a photo already
in place with its recorded sha256 is not fetched again; a photo whose label changed moves, and
one no longer selected is removed (only files named by a capture id are ever deleted).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from wastesort.capture import NOT_WASTE, Capture, CaptureStore, LabelEvent, parse_id
from wastesort.dataset import INDEX, UNMAPPED, Record, write_index
from wastesort.errors import IntegrityError, WastesortError

README = "README.md"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class Summary:
    """What an export wrote, for the README and the command's output."""

    by_label: Counter[str] = field(default_factory=Counter)
    fetched: int = 0
    kept: int = 0
    removed: int = 0
    unlabelled: int = 0
    disagreements: int = 0
    """Captures whose label events do not all say the same label."""
    bad_labels: int = 0
    newest: str = ""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add `dataset export` to the CLI's commands."""
    dataset = commands.add_parser("dataset", help="dataset folders from captures")
    actions = dataset.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="labelled captures -> a dataset folder")
    export.add_argument("--captures", required=True, help="capture store: folder or s3://...")
    export.add_argument("--out", required=True, type=Path, help="the dataset folder to write")
    export.add_argument("--since", type=date.fromisoformat, help="captures from this day on")
    export.add_argument(
        "--reviewers-only", action="store_true", help="ignore labels from /feedback callers"
    )


def run(args: argparse.Namespace) -> int:
    """The CLI's entry: export, then one line of counts."""
    summary = export(
        CaptureStore.from_uri(args.captures),
        args.out,
        since=args.since,
        reviewers_only=args.reviewers_only,
    )
    total = sum(summary.by_label.values())
    print(
        f"{total} photos in {args.out} ({summary.fetched} fetched, {summary.kept} kept, "
        f"{summary.removed} removed; {summary.unlabelled} captures without a label)"
    )
    return 0


def latest_label(
    events: list[LabelEvent], *, reviewers_only: bool = False
) -> tuple[str | None, bool]:
    """(the label that wins, whether the events disagree): the latest event's label, the
    one rule for every reader of label events (the export, the shadow report)."""
    if reviewers_only:
        events = [e for e in events if e.source == "review"]
    if not events:
        return None, False
    ordered = sorted(events, key=lambda e: e.time)
    return ordered[-1].label, len({e.label for e in ordered}) > 1


def _path(label: str, capture_id: str) -> str:
    folder = f"{UNMAPPED}/{NOT_WASTE}" if label == NOT_WASTE else label
    return f"{folder}/{capture_id}.jpg"


def _place(store: CaptureStore, out: Path, rel: str, capture: Capture) -> bool:
    """Put the photo at `rel` unless it is there already; True when it was fetched."""
    dest = out / rel
    if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == capture.sha256:
        return False
    data = store.image(capture.id)
    if hashlib.sha256(data).hexdigest() != capture.sha256:
        raise IntegrityError(f"the photo of {capture.id} does not match its record's sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return True


def _prune(out: Path, wanted: set[str]) -> int:
    """Remove photos named by a capture id that the export no longer selects."""
    removed = 0
    for file in sorted(out.rglob("*.jpg")):
        rel = file.relative_to(out).as_posix()
        try:
            parse_id(file.stem)
        except WastesortError:
            continue
        if rel not in wanted:
            file.unlink()
            removed += 1
    return removed


def export(
    store: CaptureStore,
    out: str | Path,
    *,
    since: date | None = None,
    reviewers_only: bool = False,
) -> Summary:
    """Write (or bring up to date) the dataset folder `out` from the labelled captures.

    Raises:
        RegistryError: the store cannot be read. IntegrityError: a photo differs from its record.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = store.all_labels()
    summary = Summary()
    records: list[Record] = []
    for capture in store.captures(since=since):
        label, disagree = latest_label(labels.get(capture.id, []), reviewers_only=reviewers_only)
        if label is None:
            summary.unlabelled += 1
            continue
        if not _LABEL.match(label):
            summary.bad_labels += 1
            continue
        summary.disagreements += disagree
        rel = _path(label, capture.id)
        fetched = _place(store, out, rel, capture)
        summary.fetched += fetched
        summary.kept += not fetched
        summary.by_label[label] += 1
        group = f"{capture.source}-{capture.day}"
        records.append(Record(rel, label, capture.sha256, group, capture.id))
        events = labels[capture.id]
        summary.newest = max(summary.newest, capture.time, *(e.time for e in events))
    summary.removed = _prune(out, {r.path for r in records})
    if not any(r.path.startswith(f"{UNMAPPED}/") for r in records):
        (out / UNMAPPED / INDEX).unlink(missing_ok=True)
    write_index(out, records)
    (out / README).write_text(_readme(store.uri, summary, since, reviewers_only))
    return summary


def _readme(uri: str, summary: Summary, since: date | None, reviewers_only: bool) -> str:
    rows = "\n".join(
        f"| `{label}` | {count} |"
        for label, count in sorted(summary.by_label.items())
        if label != NOT_WASTE
    )
    return f"""# Reviewed field photos

Exported by `python -m wastesort dataset export` from `{uri}`
(since: {since or "the first capture"}; labels: {
        "reviewers only" if reviewers_only else "reviewers and /feedback callers"
    }). Newest capture or label: {summary.newest or "none"}.

Each photo is a capture: `<label>/<capture id>.jpg`, listed in `index.csv` with its group
(source and day: one bin's photos of one day stay on one side of a split). Photos of no waste
are in `unmapped/{NOT_WASTE}/`, listed in `unmapped/index.csv`. The latest label of a capture wins.

| label | photos |
| --- | --- |
{rows}

- photos in classes: {sum(c for lbl, c in summary.by_label.items() if lbl != NOT_WASTE)}
- `{NOT_WASTE}`: {summary.by_label.get(NOT_WASTE, 0)}
- captures whose labels disagree (the latest one is used): {summary.disagreements}
- captures without a label (not exported): {summary.unlabelled}
- captures with an unusable label (not exported): {summary.bad_labels}
"""
