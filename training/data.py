"""The dataset: scan, validate, de-duplicate, split, fingerprint and preprocess.

Pixels come from `wastesort.preprocess.preprocess`, the function serving calls, so the network
trains on exactly the tensors it will be fed in production.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.config import Config, DataConfig, InputConfig
from wastesort.errors import ImageError
from wastesort.manifest import InputSpec
from wastesort.preprocess import preprocess

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The data folder cannot make a dataset (missing, empty class, fewer than 2 classes)."""


@dataclass(frozen=True)
class Item:
    path: str
    """Relative to the data folder, POSIX separators: `glass/glass12.jpg`."""
    label: str
    sha256: str


@dataclass
class Dataset:
    root: Path
    labels: list[str]
    items: list[Item]
    split: dict[str, list[int]]
    """Split name -> indices into `items`."""
    fingerprint: str
    report: dict = field(default_factory=dict)

    def indices(self, split: str) -> list[int]:
        return self.split[split]

    def targets(self, split: str) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[self.items[i].label] for i in self.split[split]], dtype=np.int64)

    def read(self, i: int) -> bytes:
        return (self.root / self.items[i].path).read_bytes()


def input_spec(cfg: InputConfig, *, dtype: str = "uint8") -> InputSpec:
    return InputSpec(
        height=cfg.height,
        width=cfg.width,
        dtype=dtype,
        resize=cfg.resize,
        resample=cfg.resample,
    )


def fingerprint(items: list[Item]) -> str:
    """sha256 over the sorted `path<TAB>sha256` lines: names exactly which files made a model."""
    lines = sorted(f"{it.path}\t{it.sha256}\n" for it in items)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def scan(cfg: DataConfig, spec: InputSpec) -> tuple[list[str], list[Item], np.ndarray, dict]:
    """Read every image once: hash it, preprocess it, and skip (and count) what cannot be read.

    Returns:
        labels, items, pixels (N, H, W, 3) uint8 in item order, and a report dict.

    Raises:
        DataError: no such folder, an empty class folder, or fewer than two classes.
    """
    root = Path(cfg.dir)
    if not root.is_dir():
        raise DataError(f"data.dir {root} is not a folder (expected one sub-folder per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DataError(
            f"data.dir {root} has {len(folders)} class folder(s); a classifier needs at least 2"
        )
    exts = {e.lower() for e in cfg.extensions}
    items: list[Item] = []
    arrays: list[np.ndarray] = []
    unreadable: list[str] = []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if cfg.max_images_per_class is not None:
            files = files[: cfg.max_images_per_class]
        kept = 0
        for file in files:
            rel = file.relative_to(root).as_posix()
            raw = file.read_bytes()
            try:
                pixels = preprocess(raw, spec)
            except ImageError as exc:
                unreadable.append(rel)
                log.warning("skipping unreadable image %s: %s", rel, exc)
                continue
            items.append(Item(rel, folder.name, hashlib.sha256(raw).hexdigest()))
            arrays.append(pixels)
            kept += 1
        if kept == 0:
            raise DataError(f"class folder {folder.name!r} in {root} has no readable images")
    labels = [f.name for f in folders]
    counts = Counter(it.label for it in items)
    report = {
        "images": len(items),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable[:50],
        "per_class": {label: counts[label] for label in labels},
        "imbalance_ratio": round(max(counts.values()) / min(counts.values()), 3),
    }
    return labels, items, np.stack(arrays), report


def hashes_in(paths: tuple[Path, ...] | list[Path]) -> set[str]:
    """sha256 of every file under `paths` (files or folders).

    Raises:
        DataError: a path does not exist (a typo would silently train on held-out images).
    """
    found: set[str] = set()
    for entry in paths:
        path = Path(entry)
        if not path.exists():
            raise DataError(f"data.test_include: {path} does not exist (relative to {Path.cwd()})")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found.update(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    return found


def split_items(
    items: list[Item], labels: list[str], cfg: DataConfig
) -> tuple[dict[str, list[int]], dict]:
    """Deterministic stratified split; exact duplicates (same sha256) always land together.

    Images with the same content under different labels are dropped (they cannot both be
    right) and counted. Images matching `cfg.test_include` go to the test split first.
    """
    forced = hashes_in(cfg.test_include)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it.sha256].append(i)
    conflicting = {h for h, idx in groups.items() if len({items[i].label for i in idx}) > 1}
    duplicates = sum(len(idx) - 1 for h, idx in groups.items() if h not in conflicting)
    by_class: dict[str, list[str]] = defaultdict(list)
    for h, idx in groups.items():
        if h not in conflicting:
            by_class[items[idx[0]].label].append(h)
    rng = np.random.default_rng(cfg.split_seed)
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in labels:
        hashes = sorted(by_class[label])
        if len(hashes) < len(SPLITS):
            raise DataError(
                f"class {label!r} has {len(hashes)} distinct usable image(s); every class needs "
                f"at least {len(SPLITS)}, one each for train, validation and test"
            )
        shuffled = [hashes[j] for j in rng.permutation(len(hashes))]
        hashes = [h for h in shuffled if h in forced] + [h for h in shuffled if h not in forced]
        n = len(hashes)
        n_test = max(round(n * cfg.test_fraction), 1)
        n_val = max(round(n * cfg.val_fraction), 1)
        n_test = max(n_test, sum(h in forced for h in hashes))
        for rank, h in enumerate(hashes):
            name = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            split[name].extend(groups[h])
    for name in SPLITS:
        split[name].sort()
    report = {
        "duplicate_images": duplicates,
        "conflicting_label_images": sum(len(groups[h]) for h in conflicting),
        "forced_to_test": sum(len(groups[h]) for h in groups if h in forced),
        "split_sizes": {name: len(split[name]) for name in SPLITS},
    }
    return split, report


def load_dataset(cfg: Config) -> tuple[Dataset, np.ndarray]:
    """Scan, split and fingerprint `cfg.data.dir`; return the dataset and all pixels."""
    spec = input_spec(cfg.input)
    labels, items, pixels, report = scan(cfg.data, spec)
    split, split_report = split_items(items, labels, cfg.data)
    report.update(split_report)
    ds = Dataset(Path(cfg.data.dir), labels, items, split, fingerprint(items), report)
    report["per_split_class"] = {
        name: dict(Counter(items[i].label for i in split[name])) for name in SPLITS
    }
    return ds, pixels


def write_split(ds: Dataset, path: Path) -> Path:
    """The split as a file list (split, path, label, sha256), saved with the run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "path", "label", "sha256"])
        for name in SPLITS:
            for i in ds.split[name]:
                it = ds.items[i]
                writer.writerow([name, it.path, it.label, it.sha256])
    return path
