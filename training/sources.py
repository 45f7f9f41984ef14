"""The config's sources, read and checked before any work: folders, class maps, classes, overlap.

Each source is a dataset folder read by `wastesort.dataset` (the one reader, shared with the
review export). Its labels go through its `class_map`; what maps to null, and its `unmapped/`
part, are photos of none of the classes: scored (they should come out `uncertain`), never
trained on. An `eval` source that shares a photo (by sha256) with a `train` source is an error:
it would score the model on what it trained on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from training.source_config import DataConfig, SourceConfig
from wastesort.dataset import DatasetError, Folder, Record, read_folder


class DataError(ValueError):
    """The data cannot make a dataset; the message names the config key or the folder."""


@dataclass(frozen=True)
class Source:
    name: str
    role: str
    root: Path
    records: tuple[Record, ...]
    """The photos of the classes, labelled with their class (after `class_map`)."""
    unmapped: tuple[Record, ...]
    """Photos of none of the classes, labelled with what they are."""
    share: float
    folder: Folder
    class_map: dict[str, str | None]


def _key(source: SourceConfig, *rest: str) -> str:
    return ".".join(("data.sources", source.name, *rest))


def read(source: SourceConfig, extensions: tuple[str, ...]) -> Folder:
    """The source's folder, with a message naming the config key when it cannot be read.

    Raises:
        DataError: no such folder, or an index that does not match its files.
    """
    if not Path(source.dir).is_dir():
        raise DataError(
            f"{_key(source, 'dir')}: {source.dir} is not a folder (relative to {Path.cwd()}); "
            f"point it at a dataset folder, or drop the source with {_key(source)}=null"
        )
    try:
        folder = read_folder(source.dir, extensions=extensions)
    except DatasetError as exc:
        raise DataError(f"{_key(source)}: {exc}") from None
    known = set(folder.labels) | {r.label for r in folder.unmapped}
    for label in source.class_map:
        if label not in known:
            raise DataError(
                f"{_key(source, 'class_map')}: {label!r} is not a label in {source.dir} "
                f"(labels: {', '.join(sorted(known))})"
            )
    return folder


def classes(cfg: DataConfig, folders: dict[str, Folder]) -> list[str]:
    """`data.labels`, else the train sources' labels after their class maps (sorted, as the
    class folders always were).

    Raises:
        DataError: a class map points at no class (a typo would make a new class), or a
            source holds a label that is not a class and that its class map does not map.
    """
    natives = {
        label
        for s in cfg.by_role("train")
        for label in folders[s.name].labels
        if label not in s.class_map
    }
    basis = set(cfg.labels) if cfg.labels is not None else natives
    for s in cfg.sources:
        for label, target in s.class_map.items():
            if target is not None and target not in basis:
                raise DataError(
                    f"{_key(s, 'class_map', label)}: {target!r} is not a class "
                    f"(classes: {', '.join(sorted(basis))})"
                )
    if cfg.labels is not None:
        names = list(cfg.labels)
    else:
        names = sorted(
            {
                s.class_map.get(label, label)
                for s in cfg.by_role("train")
                for label in folders[s.name].labels
            }
            - {None}
        )
    for s in cfg.sources:
        for label in folders[s.name].labels:
            target = s.class_map.get(label, label)
            if target is not None and target not in names:
                raise DataError(
                    f"{_key(s)}: label {label!r} is not a class (classes: {', '.join(names)}); "
                    f"map it: {_key(s, 'class_map', label)}=<class>, or null for none of them"
                )
    if len(names) < 2:
        raise DataError(
            f"the train sources hold {len(names)} class(es) ({', '.join(names)}); "
            "a classifier needs at least 2"
        )
    return names


def _capped(records: list[Record], cap: int | None) -> list[Record]:
    if cap is None:
        return records
    taken: dict[str, int] = defaultdict(int)
    kept = []
    for r in records:
        taken[r.label] += 1
        if taken[r.label] <= cap:
            kept.append(r)
    return kept


def mapped(source: SourceConfig, folder: Folder, cap: int | None = None) -> Source:
    """The source with its class map applied (null -> out of scope) and the per-class cap."""
    inside: list[Record] = []
    outside = list(folder.unmapped)
    for r in folder.records:
        target = source.class_map.get(r.label, r.label)
        if target is None:
            outside.append(r)
        else:
            inside.append(r if target == r.label else Record(**{**r.__dict__, "label": target}))
    return Source(
        name=source.name,
        role=source.role,
        root=Path(source.dir),
        records=tuple(_capped(inside, cap)),
        unmapped=tuple(outside),
        share=source.share,
        folder=folder,
        class_map=dict(source.class_map),
    )


def check_overlap(sources: list[Source]) -> None:
    """An eval source must not share a photo (sha256) with a train source.

    Raises:
        DataError: naming both sources, how many photos and one example.
    """
    trained: dict[str, tuple[str, str]] = {}
    for s in sources:
        if s.role == "train":
            for r in (*s.records, *s.unmapped):
                trained.setdefault(r.sha256, (s.name, r.path))
    for s in sources:
        if s.role != "eval":
            continue
        shared = [r for r in (*s.records, *s.unmapped) if r.sha256 in trained]
        if shared:
            name, path = trained[shared[0].sha256]
            raise DataError(
                f"data.sources.{s.name}: {len(shared)} photo(s) are also in train source "
                f"{name!r} (same sha256, e.g. {shared[0].path} = {path}); an eval source must "
                "hold photos the model never trains on: remove them, or make it a train source"
            )


def resolve(cfg: DataConfig) -> tuple[list[str], list[Source]]:
    """Read every source, check the class maps and the overlap, and return (classes, sources).

    Raises:
        DataError: the first problem found, naming its config key.
    """
    folders = {s.name: read(s, cfg.extensions) for s in cfg.sources}
    names = classes(cfg, folders)
    sources = [mapped(s, folders[s.name], cfg.max_images_per_class) for s in cfg.sources]
    check_overlap(sources)
    return names, sources
