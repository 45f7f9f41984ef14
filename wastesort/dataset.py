"""Dataset folders: the one reader (and writer) of the shape every labelled photo set shares.

A dataset folder is `<label>/<file>.jpg` plus, optionally, `index.csv` with the columns
`path,label,group,source_path,sha256` (`path` relative to the folder). `group` names photos that
must stay on one side of a train/validation/test split (the same object shot twice); a missing
`group` column or an empty cell means one group per file. `unmapped/` holds photos of none of the
classes, with their own `unmapped/index.csv` (paths relative to `unmapped/`) or label folders.
A folder without `index.csv` is read from its class folders: the shared data sets, a review export
and a plain TrashNet copy all read the same way, in training and anywhere else.

Standard library only: the serving path may import this without numpy or Pillow.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

INDEX = "index.csv"
UNMAPPED = "unmapped"
COLUMNS = ("path", "label", "group", "source_path", "sha256")
REQUIRED = ("path", "label")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class DatasetError(ValueError):
    """A dataset folder or its index is unusable; the message names the folder and the row."""


@dataclass(frozen=True)
class Record:
    """One labelled photo of a dataset folder."""

    path: str
    """Relative to the folder, POSIX separators: `glass/glass12.jpg`, `unmapped/food/a.jpg`."""
    label: str
    sha256: str
    """Of the file's bytes, as read (an index's value is checked against it)."""
    group: str = ""
    """Photos sharing a group stay on one side of a split; empty means the file's own path."""
    source_path: str = ""
    """Where the photo came from (the original set, a capture id), for provenance."""

    @property
    def unit(self) -> str:
        """The group this photo belongs to: its `group`, else its own path."""
        return self.group or self.path


@dataclass(frozen=True)
class Folder:
    """Everything one dataset folder holds, in a stable order (sorted by path)."""

    root: Path
    labels: tuple[str, ...]
    """The class labels, sorted: the index's labels, or every class folder (an empty one too)."""
    records: tuple[Record, ...]
    unmapped: tuple[Record, ...] = ()
    """Photos of none of the classes (`unmapped/`); `label` says what they are."""
    indexed: bool = False
    """Read from `index.csv` (else from the class folders)."""
    unindexed: int = 0
    """Image files in the class folders that the index does not list (they are not read)."""

    def read(self, record: Record) -> bytes:
        return (self.root / record.path).read_bytes()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _order(records: Iterable[Record]) -> tuple[Record, ...]:
    """By path parts, as `sorted(Path.rglob(...))` orders files: a folder's order never depends
    on whether it was read from an index or from its class folders."""
    return tuple(sorted(records, key=lambda r: PurePosixPath(r.path).parts))


def _relative(root: Path, text: str, where: str) -> str:
    """An index path, checked to stay inside the folder."""
    path = PurePosixPath(text.strip().replace("\\", "/"))
    if not text.strip() or path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{where}: path {text!r} must be relative and inside {root}")
    return path.as_posix()


def read_index(root: Path, *, prefix: str = "") -> list[Record]:
    """The records `root/index.csv` lists, every file hashed and checked against its row.

    Args:
        root: the folder holding `index.csv`; paths in it are relative to this folder.
        prefix: put before every path (`unmapped/`), so paths stay relative to the dataset root.

    Raises:
        DatasetError: a required column is missing, a path leaves the folder or names no file,
            a path is listed twice, or a file's sha256 differs from its row.
    """
    index = root / INDEX
    try:
        text = index.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{index}: cannot read it: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(
            f"{index}: missing column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})"
        )
    records: list[Record] = []
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        where = f"{index}, line {line}"
        rel = _relative(root, row.get("path") or "", where)
        label = (row.get("label") or "").strip()
        if not label:
            raise DatasetError(f"{where}: empty label for {rel}")
        if rel in seen:
            raise DatasetError(f"{where}: {rel} is listed twice")
        seen.add(rel)
        file = root / rel
        if not file.is_file():
            raise DatasetError(f"{where}: {rel} does not exist in {root}")
        actual = sha256_file(file)
        listed = (row.get("sha256") or "").strip().lower()
        if listed and listed != actual:
            raise DatasetError(
                f"{where}: {rel} has sha256 {actual[:12]}..., the index says {listed[:12]}..."
            )
        records.append(
            Record(
                path=f"{prefix}{rel}",
                label=label,
                sha256=actual,
                group=(row.get("group") or "").strip(),
                source_path=(row.get("source_path") or "").strip(),
            )
        )
    return records


def _class_folders(root: Path, *, skip: Sequence[str] = ()) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in skip
    )


def _images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def scan_classes(
    root: Path,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    prefix: str = "",
    skip: Sequence[str] = (),
) -> tuple[list[str], list[Record]]:
    """(labels, records) of a folder with one sub-folder per class and no index: every image
    file (by extension, in sub-folders too) is hashed and labelled with its class folder."""
    folders = _class_folders(root, skip=skip)
    records = [
        Record(
            path=f"{prefix}{file.relative_to(root).as_posix()}",
            label=folder.name,
            sha256=sha256_file(file),
        )
        for folder in folders
        for file in _images(folder, extensions)
    ]
    return [f.name for f in folders], records


def read_folder(root: str | Path, *, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Folder:
    """Read a dataset folder: its `index.csv` when it has one, else its class folders; and its
    `unmapped/` part either way.

    Raises:
        DatasetError: not a folder, or an index that does not match the files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder (expected one sub-folder per class)")
    unmapped: list[Record] = []
    out_of_scope = root / UNMAPPED
    if (out_of_scope / INDEX).is_file():
        unmapped = read_index(out_of_scope, prefix=f"{UNMAPPED}/")
    elif out_of_scope.is_dir():
        unmapped = scan_classes(out_of_scope, extensions=extensions, prefix=f"{UNMAPPED}/")[1]
    if not (root / INDEX).is_file():
        labels, records = scan_classes(root, extensions=extensions, skip=(UNMAPPED,))
        return Folder(root, tuple(labels), _order(records), _order(unmapped))
    records = read_index(root)
    listed = {r.path for r in records}
    unindexed = sum(
        file.relative_to(root).as_posix() not in listed
        for folder in _class_folders(root, skip=(UNMAPPED,))
        for file in _images(folder, extensions)
    )
    labels = tuple(sorted({r.label for r in records}))
    return Folder(root, labels, _order(records), _order(unmapped), True, unindexed)


def write_index(root: str | Path, records: Iterable[Record]) -> Path:
    """Write `root/index.csv` for records whose files are already in place (an export).

    Paths under `unmapped/` go to `unmapped/index.csv`, relative to `unmapped/`, as readers expect.
    """
    root = Path(root)
    main: list[Record] = []
    other: list[Record] = []
    for record in records:
        (other if record.path.startswith(f"{UNMAPPED}/") else main).append(record)
    for folder, rows, prefix in ((root, main, ""), (root / UNMAPPED, other, f"{UNMAPPED}/")):
        if not rows and folder != root:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / INDEX, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            for r in _order(rows):
                rel = r.path.removeprefix(prefix)
                writer.writerow([rel, r.label, r.group, r.source_path, r.sha256])
    return root / INDEX
