"""The train/validation/test split: deterministic, stratified per source and class, whole groups.

The unit of the split is a group: photos sharing a `group` (the same object shot twice) or the
same bytes (sha256) are joined, and a unit lands on one side whole. Each source is split on its
own, with a generator seeded by `data.split_seed` alone, so adding a source never moves another
source's photos; a one-source run (TrashNet, no groups) splits exactly as the project always has:
per class, the sorted distinct hashes are permuted and cut into test, validation, train.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.sources import DataError

if TYPE_CHECKING:
    from training.data import Item
    from training.source_config import DataConfig

SPLITS = ("train", "val", "test")


class SplitError(DataError):
    """The photos cannot be split as asked (a class too small, a missing `test_include`)."""


def hashes_in(paths: Sequence[Path]) -> set[str]:
    """sha256 of every file under `paths` (files or folders).

    Raises:
        SplitError: a path does not exist (a typo would silently train on held-out images).
    """
    found: set[str] = set()
    for entry in paths:
        path = Path(entry)
        if not path.exists():
            raise SplitError(f"data.test_include: {path} does not exist (relative to {Path.cwd()})")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found.update(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    return found


def _units(
    items: Sequence[Item], hashes: list[str], by_hash: dict[str, list[int]]
) -> list[list[str]]:
    """Hashes joined by shared groups (union-find), each unit sorted, in sorted order."""
    parent = {h: h for h in hashes}

    def root(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    first: dict[str, str] = {}
    for h in hashes:
        for i in by_hash[h]:
            group = items[i].unit
            if group in first:
                a, b = root(h), root(first[group])
                parent[max(a, b)] = min(a, b)
            else:
                first[group] = h
    joined: dict[str, list[str]] = defaultdict(list)
    for h in hashes:
        joined[root(h)].append(h)
    return sorted(sorted(unit) for unit in joined.values())


def split_source(
    items: Sequence[Item],
    indices: Sequence[int],
    labels: Sequence[str],
    cfg: DataConfig,
    *,
    forced: set[str],
    earlier: set[str],
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Split one source's photos (`indices` into `items`).

    Photos whose bytes carry two labels are dropped (they cannot both be right), and so are
    photos an earlier train source already holds (that source decides their side). A unit goes
    to the stratum of its most common label; units holding a `forced` hash go to test first.
    """
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        by_hash[items[i].sha256].append(i)
    conflicting = {h for h, ii in by_hash.items() if len({items[i].label for i in ii}) > 1}
    repeated = {h for h in by_hash if h in earlier and h not in conflicting}
    usable = sorted(h for h in by_hash if h not in conflicting and h not in repeated)
    units = _units(items, usable, by_hash)
    order = {label: k for k, label in enumerate(labels)}
    by_class: dict[str, list[list[str]]] = defaultdict(list)
    mixed = 0
    for unit in units:
        counts = Counter(items[i].label for h in unit for i in by_hash[h])
        mixed += len(counts) > 1
        label = min(counts, key=lambda c: (-counts[c], order[c]))
        by_class[label].append(unit)
    rng = np.random.default_rng(cfg.split_seed)
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    present = {items[i].label for i in indices}
    for label in labels:
        if label not in present:  # a source may hold only some of the classes
            continue
        stratum = by_class[label]
        if len(stratum) < len(SPLITS):
            raise SplitError(
                f"class {label!r} has {len(stratum)} distinct usable image(s); every class needs "
                f"at least {len(SPLITS)}, one each for train, validation and test"
            )
        shuffled = [stratum[j] for j in rng.permutation(len(stratum))]
        is_forced = [any(h in forced for h in unit) for unit in shuffled]
        shuffled = [u for u, f in zip(shuffled, is_forced, strict=True) if f] + [
            u for u, f in zip(shuffled, is_forced, strict=True) if not f
        ]
        n = len(shuffled)
        n_test = max(round(n * cfg.test_fraction), 1, sum(is_forced))
        n_val = max(round(n * cfg.val_fraction), 1)
        for rank, unit in enumerate(shuffled):
            name = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            split[name].extend(i for h in unit for i in by_hash[h])
    for name in SPLITS:
        split[name].sort()
    report = {
        "duplicate_images": sum(len(by_hash[h]) - 1 for h in by_hash if h not in conflicting),
        "conflicting_label_images": sum(len(by_hash[h]) for h in conflicting),
        "in_earlier_source_images": sum(len(by_hash[h]) for h in repeated),
        "forced_to_test": sum(len(by_hash[h]) for h in by_hash if h in forced),
        "units": len(units),
        "units_of_several_images": sum(sum(len(by_hash[h]) for h in u) > 1 for u in units),
        "units_of_several_labels": mixed,
        "split_sizes": {name: len(split[name]) for name in SPLITS},
    }
    return split, report


def split_items(
    items: Sequence[Item], labels: Sequence[str], cfg: DataConfig
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Split every source's photos (in the order the sources first appear in `items`).

    Returns:
        split name -> sorted indices into `items`, and a report: totals at the top level and
        one entry per source under `sources`.
    """
    forced = hashes_in(cfg.test_include)
    sources: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        sources[item.source].append(i)
    split: dict[str, list[int]] = {name: [] for name in SPLITS}
    per_source: dict[str, dict[str, Any]] = {}
    earlier: set[str] = set()
    for name, indices in sources.items():
        try:
            part, report = split_source(items, indices, labels, cfg, forced=forced, earlier=earlier)
        except SplitError as exc:
            raise SplitError(f"source {name!r}: {exc}" if len(sources) > 1 else str(exc)) from None
        for key in SPLITS:
            split[key].extend(part[key])
        per_source[name] = report
        earlier.update(items[i].sha256 for i in indices)
    for key in SPLITS:
        split[key].sort()
    totals = {
        key: sum(r[key] for r in per_source.values())
        for key in ("duplicate_images", "conflicting_label_images", "forced_to_test")
    }
    return split, {
        **totals,
        "split_sizes": {key: len(split[key]) for key in SPLITS},
        "sources": per_source,
    }
