"""The dataset: read the sources, decode, de-duplicate, split, fingerprint.

Pixels come from `wastesort.preprocess.preprocess`, the function serving calls, so the network
trains on exactly the tensors it will be fed in production. Items are ordered train sources
first (in config order), then eval sources, then the photos of none of the classes; one source's
items keep the order of its files, so a one-source run sees its photos as it always did.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.config import Config, InputConfig
from training.source_config import DataConfig
from training.sources import DataError, Source, resolve
from training.split import SPLITS, hashes_in, split_items
from wastesort.errors import ImageError
from wastesort.manifest import InputSpec
from wastesort.preprocess import preprocess

log = logging.getLogger(__name__)

__all__ = ["SPLITS", "DataError", "Dataset", "Item", "hashes_in", "load_dataset", "split_items"]

EVAL, UNMAPPED = "eval", "unmapped"
"""The parts beside the train/val/test split: eval sources, and photos of none of the classes."""


@dataclass(frozen=True)
class Item:
    path: str
    """Relative to its source's folder, POSIX separators: `glass/glass12.jpg`."""
    label: str
    """The class; for a photo of none of the classes, what it is (`food_organics`)."""
    sha256: str
    source: str = ""
    group: str = ""
    """Photos sharing a group stay on one side of the split; empty: the file's own."""
    in_scope: bool = True
    """False for a photo of none of the classes (`unmapped/`, or a class map to null)."""

    @property
    def unit(self) -> str:
        return self.group or self.path


@dataclass
class Dataset:
    roots: dict[str, Path]
    """Source name -> its folder."""
    labels: list[str]
    items: list[Item]
    split: dict[str, list[int]]
    """Split name (`train`, `val`, `test`, `eval`, `unmapped`) -> indices into `items`."""
    fingerprint: str
    report: dict = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    """Source name -> `train` or `eval`, in config order."""
    shares: dict[str, float] = field(default_factory=dict)

    def indices(self, split: str) -> list[int]:
        return self.split.get(split, [])

    def targets(self, split: str) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[self.items[i].label] for i in self.indices(split)], dtype=np.int64)

    def sources_of(self, split: str) -> list[str]:
        return [self.items[i].source for i in self.indices(split)]

    def read(self, i: int) -> bytes:
        item = self.items[i]
        return (self.roots[item.source] / item.path).read_bytes()

    def name(self, i: int) -> str:
        """How reports name a photo: its path, after its source's name when there are several."""
        item = self.items[i]
        return item.path if len(self.roots) == 1 else f"{item.source}:{item.path}"


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


def combined_fingerprint(by_source: dict[str, str]) -> str:
    """One train source: its own fingerprint (TrashNet's stays what the bundled models record);
    several: sha256 over the sorted `name<TAB>fingerprint` lines."""
    if len(by_source) == 1:
        return next(iter(by_source.values()))
    lines = sorted(f"{name}\t{fp}\n" for name, fp in by_source.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _decode(source: Source, spec: InputSpec, *, unmapped: bool) -> tuple[list[Item], list, list]:
    items, arrays, unreadable = [], [], []
    for r in source.unmapped if unmapped else source.records:
        try:
            pixels = preprocess((source.root / r.path).read_bytes(), spec)
        except ImageError as exc:
            unreadable.append(r.path)
            log.warning("skipping unreadable image %s/%s: %s", source.name, r.path, exc)
            continue
        items.append(Item(r.path, r.label, r.sha256, source.name, r.group, not unmapped))
        arrays.append(pixels)
    return items, arrays, unreadable


def _source_report(source: Source, items: list[Item], unreadable: list[str]) -> dict:
    counts = Counter(it.label for it in items)
    return {
        "role": source.role,
        "dir": str(source.root),
        "indexed": source.folder.indexed,
        "unindexed_files": source.folder.unindexed,
        "images": len(items),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable[:50],
        "per_class": dict(sorted(counts.items())),
        "unmapped": len(source.unmapped),
        "fingerprint": fingerprint(items),
    }


def scan(cfg: DataConfig, spec: InputSpec) -> tuple[list[str], list[Item], np.ndarray, dict]:
    """Read every source once: hash, preprocess, and skip (and count) what cannot be read.

    Returns:
        labels, items (train sources, then eval sources, then photos of none of the classes),
        pixels (N, H, W, 3) uint8 in item order, and a report dict.

    Raises:
        DataError: a source cannot be read, a class map or label is wrong, an eval source
            shares photos with a train source, or a train source's class has no readable image.
    """
    labels, sources = resolve(cfg)
    order = [s for s in sources if s.role == "train"] + [s for s in sources if s.role == "eval"]
    items: list[Item] = []
    arrays: list[np.ndarray] = []
    per_source: dict[str, dict] = {}
    for unmapped in (False, True):
        for source in order:
            got, pixels, unreadable = _decode(source, spec, unmapped=unmapped)
            items += got
            arrays += pixels
            if not unmapped:
                per_source[source.name] = _source_report(source, got, unreadable)
                _check_classes(source, got)
            else:
                per_source[source.name]["unmapped_unreadable"] = len(unreadable)
    trained = [it for it in items if it.in_scope and per_source[it.source]["role"] == "train"]
    counts = Counter(it.label for it in trained)
    report = {
        "images": len(trained),
        "unreadable": sum(r["unreadable"] for r in per_source.values()),
        "unreadable_files": [f for r in per_source.values() for f in r["unreadable_files"]][:50],
        "per_class": {label: counts[label] for label in labels},
        "imbalance_ratio": round(max(counts.values()) / max(min(counts.values()), 1), 3),
        "sources": per_source,
        "per_source_class": {name: r["per_class"] for name, r in per_source.items()},
    }
    return labels, items, np.stack(arrays), report


def _check_classes(source: Source, items: list[Item]) -> None:
    """A train source's class folder with no readable image is a mistake, not a missing class."""
    if source.role != "train":
        return
    have = {it.label for it in items}
    for label in source.folder.labels:
        target = source.class_map.get(label, label)
        if target is not None and target not in have:
            raise DataError(f"class folder {label!r} in {source.root} has no readable images")


def load_dataset(cfg: Config) -> tuple[Dataset, np.ndarray]:
    """Read, split and fingerprint every source; return the dataset and all pixels."""
    spec = input_spec(cfg.input)
    labels, items, pixels, report = scan(cfg.data, spec)
    roles = {s.name: s.role for s in cfg.data.sources}
    # the train sources' photos of the classes come first
    n_train = sum(roles[it.source] == "train" and it.in_scope for it in items)
    split, split_report = split_items(items[:n_train], labels, cfg.data)
    split[EVAL] = [i for i, it in enumerate(items) if i >= n_train and it.in_scope]
    split[UNMAPPED] = [i for i, it in enumerate(items) if not it.in_scope]
    for name, r in split_report.pop("sources").items():
        report["sources"][name].update(r)
    report.update(split_report)
    report["per_split_class"] = {
        name: dict(Counter(items[i].label for i in split[name])) for name in SPLITS
    }
    for name, r in report["sources"].items():
        r["per_split_class"] = {
            key: dict(Counter(items[i].label for i in split[key] if items[i].source == name))
            for key in (*SPLITS, EVAL)
        }
    fingerprints = {
        name: r["fingerprint"] for name, r in report["sources"].items() if roles[name] == "train"
    }
    ds = Dataset(
        roots={s.name: Path(s.dir) for s in cfg.data.sources},
        labels=labels,
        items=items,
        split=split,
        fingerprint=combined_fingerprint(fingerprints),
        report=report,
        roles=roles,
        shares={s.name: s.share for s in cfg.data.sources},
    )
    return ds, pixels


def write_split(ds: Dataset, path: Path) -> Path:
    """Every photo's part (train, val, test, eval, unmapped) as a file list, saved with the run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "source", "path", "label", "group", "sha256"])
        for name in (*SPLITS, EVAL, UNMAPPED):
            for i in ds.indices(name):
                it = ds.items[i]
                writer.writerow([name, it.source, it.path, it.label, it.group, it.sha256])
    return path
