"""Champion against challenger: both models through `wastesort.Classifier`, on the same photos.

The photos: each train source's test split, each eval source (and its photos of none of the
classes), and both versions' golden sets. Each model answers with its own preprocessing,
temperature and `uncertain` threshold, as it would serve. The verdict is the declared rule of
the config's `champion` section: on no source worse than the champion by more than `max_drop`,
and better on the field check (the eval sources together) or on the union of every scored photo.
A run publishes its challenger only when the verdict passes, or when forced with a reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import per_source
from training.config import ChampionConfig, Config, InputConfig
from training.data import Dataset, load_dataset
from training.evaluate import VariantScores, photo_sets, score_files
from training.source_config import DataConfig, SourceConfig
from training.sources import DataError, mapped, read
from wastesort import Classifier, shadow, shadow_cli
from wastesort.classifier import split_ref
from wastesort.errors import ImageError, ManifestError, RegistryError
from wastesort.preprocess import load_image
from wastesort.registry import GoldenSample, Registry

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class VerdictError(RuntimeError):
    """The challenger does not beat the champion by the config's rule; nothing is published."""


@dataclass(frozen=True)
class PhotoSet:
    """Photos both models answer: a source's held-out part, an eval source, a golden set."""

    name: str
    kind: str
    images: list[bytes]
    truth: list[str]


def dataset_sets(ds: Dataset) -> list[PhotoSet]:
    """The held-out photo sets of a run's dataset (`evaluate.photo_sets`)."""
    return [
        PhotoSet(name, kind, [ds.read(i) for i in idx], [ds.items[i].label for i in idx])
        for name, kind, idx in photo_sets(ds)
    ]


def golden_from_samples(name: str, samples: Sequence[GoldenSample]) -> PhotoSet:
    return PhotoSet(
        f"golden:{name}",
        per_source.GOLDEN,
        [s.data for s in samples],
        [s.expected_class for s in samples],
    )


def golden_of(clf: Classifier, uri: str, name: str) -> PhotoSet | None:
    """A published version's golden set, its images verified by sha256; None for a bare file."""
    base, _ = split_ref(uri)
    if not clf.entry.golden_set or base.endswith(".tflite"):
        return None
    registry = Registry.from_uri(base)
    items = clf.entry.golden_set
    return PhotoSet(
        f"golden:{name}",
        per_source.GOLDEN,
        [registry.fetch_content(item.image)[1] for item in items],
        [item.expected_class for item in items],
    )


def answer(clf: Classifier, photos: PhotoSet) -> per_source.Scored:
    """How `clf` answers `photos`, as it would serve (its temperature and threshold)."""
    probs = score_files(clf, photos.images) if photos.images else None
    return per_source.scored_from_probs(
        photos.name,
        photos.kind,
        photos.truth,
        probs if probs is not None else [],
        labels=clf.labels,
        threshold=clf.entry.uncertain_threshold,
    )


def compare(champion: Classifier, challenger: Classifier, sets: Sequence[PhotoSet]) -> dict:
    """Both models' per-source tables on the same photo sets."""
    return {
        role: {
            "version": clf.version,
            "uncertain_threshold": clf.entry.uncertain_threshold,
            "table": per_source.table([answer(clf, s) for s in sets]),
        }
        for role, clf in ((CHAMPION, champion), (CHALLENGER, challenger))
    }


def verdict(result: dict, rule: ChampionConfig) -> dict[str, Any]:
    """The config's rule applied to a comparison: `passed`, and the reasons in words."""
    metric, old, new = rule.metric, result[CHAMPION]["table"], result[CHALLENGER]["table"]
    worse = [
        f"{name}: {new[name][metric] * 100:.1f} against {row[metric] * 100:.1f}"
        for name, row in old.items()
        if row["kind"] in per_source.SOURCE_KINDS
        and row["n"]
        and new[name][metric] < row[metric] - rule.max_drop - 1e-9
    ]
    gains = {
        name: new[name][metric] - old[name][metric]
        for name in rule.better_on
        if name in old and old[name]["n"]
    }
    better = [name for name, gain in gains.items() if gain > 1e-9]
    reasons = []
    if worse:
        reasons.append(
            f"more than {rule.max_drop * 100:g} point(s) of {metric} below the champion on "
            + "; ".join(worse)
        )
    if not better:
        shown = ", ".join(f"{n} {g * 100:+.1f}" for n, g in gains.items()) or "nothing to compare"
        reasons.append(f"not better on {' or '.join(rule.better_on)} ({shown})")
    return {
        "passed": not reasons,
        "reasons": reasons
        or [
            f"better on {', '.join(better)}; on no source worse by more "
            f"than {rule.max_drop * 100:g} point(s) of {metric}"
        ],
        "rule": rule.model_dump(mode="json", exclude={"force"}),
        "gains": {n: round(g, 4) for n, g in gains.items()},
    }


def challenger_of(path: Path, int8: VariantScores, version: str, threshold: float) -> Classifier:
    """This run's int8 model as it will serve: its version id, temperature and threshold."""
    entry = int8.entry.model_copy(
        update={
            "version": version,
            "temperature": int8.temperature,
            "uncertain_threshold": threshold,
        }
    )
    return Classifier(path.read_bytes(), entry)


def load_champion(uri: str | None, alias: str) -> tuple[Classifier | None, str]:
    """The registry's champion, or None and why there is none (no registry, no such alias)."""
    if uri is None:
        return None, "no registry to hold a champion (registry.uri and champion.uri are null)"
    try:
        manifest = Registry.from_uri(uri).manifest()
    except RegistryError as exc:
        return None, f"no champion: {exc}"
    if alias not in manifest.aliases:
        return None, f"no champion: {uri} has no alias {alias!r}"
    try:
        return Classifier.load(f"{uri}@{alias}"), ""
    except ManifestError as exc:
        return None, f"no champion: {exc}"


def against_champion(
    rule: ChampionConfig,
    uri: str | None,
    challenger: Classifier,
    sets: Sequence[PhotoSet],
) -> dict[str, Any]:
    """A run's comparison: the champion at `uri@rule.alias` against this run's challenger on
    `sets`, with the verdict (a first model, with no champion, passes) and any forced reason."""
    champion, why = load_champion(uri, rule.alias)
    if champion is None:
        log.info("%s: the challenger passes", why)
        out: dict[str, Any] = {
            CHAMPION: None,
            CHALLENGER: {
                "version": challenger.version,
                "table": per_source.table([answer(challenger, s) for s in sets]),
            },
            "verdict": {"passed": True, "reasons": [why]},
        }
    else:
        golden = golden_of(champion, f"{uri}@{rule.alias}", CHAMPION)
        out = compare(champion, challenger, [*sets, *([golden] if golden else [])])
        out["verdict"] = verdict(out, rule)
    out["verdict"]["forced"] = rule.force if not out["verdict"]["passed"] else None
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _pair(old: dict, new: dict, key: str) -> str:
    a, b = old.get(key), new.get(key)
    if a is None or b is None:
        return f"{_pct(a)} → {_pct(b)}"
    return f"{_pct(a)} → {_pct(b)} ({(b - a) * 100:+.1f})"


def render(result: dict) -> list[str]:
    """Markdown lines: the comparison table and the verdict."""
    if result.get(CHAMPION) is None:
        return [f"No comparison: {result['verdict']['reasons'][0]}."]
    old, new = result[CHAMPION]["table"], result[CHALLENGER]["table"]
    lines = [
        f"Champion `{result[CHAMPION]['version']}` → challenger "
        f"`{result[CHALLENGER]['version']}` (each at its own `uncertain` threshold).",
        "",
        "| photos | kind | n | accuracy | macro-F1 | decided | confidently wrong |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, a in old.items():
        b = new[name]
        if a["kind"] == per_source.UNMAPPED:
            lines.append(
                f"| {name} | none of the classes | {a['n']} | `uncertain`: "
                f"{_pair(a, b, 'uncertain')} | | | |"
            )
        elif a["n"]:
            lines.append(
                f"| {name} | {a['kind']} | {a['n']} | {_pair(a, b, 'accuracy')} | "
                f"{a['macro_f1']:.3f} → {b['macro_f1']:.3f} | {_pair(a, b, 'decided')} | "
                f"{_pair(a, b, 'confidently_wrong')} |"
            )
    v = result["verdict"]
    lines += [
        "",
        f"Verdict: **{'passes' if v['passed'] else 'fails'}**: {'; '.join(v['reasons'])}.",
    ]
    if v.get("forced"):
        lines.append(f"Published anyway (forced): {v['forced']}")
    if result.get("shadow"):
        lines += [
            "",
            f"Shadow scoring on `{result['shadow']['source']}` (not part of the verdict):",
            "",
            "```",
            *shadow.render(result["shadow"]),
            "```",
        ]
    return lines


def _readable(data: bytes) -> bool:
    try:
        load_image(data)
    except ImageError:
        return False
    return True


def folder_sets(
    source: SourceConfig, labels: Sequence[str], extensions: tuple[str, ...]
) -> list[PhotoSet]:
    """An eval source read whole (its class map applied): its photos of the classes, and its
    photos of none of them. Unreadable files are left out (and logged).

    Raises:
        DataError: the folder cannot be read, or holds a label that is not one of `labels`.
    """
    src = mapped(source, read(source, extensions))
    strange = sorted({r.label for r in src.records} - set(labels))
    if strange:
        raise DataError(
            f"{source.name}: label(s) {', '.join(strange)} are not classes of the challenger "
            f"({', '.join(labels)}); map them with a config's class_map"
        )
    out = []
    for name, kind, records in (
        (source.name, per_source.EVAL, src.records),
        (f"{source.name}/unmapped", per_source.UNMAPPED, src.unmapped),
    ):
        photos = [(r, (src.root / r.path).read_bytes()) for r in records]
        kept = [(r, data) for r, data in photos if _readable(data)]
        if len(kept) < len(photos):
            log.warning("%s: %d unreadable photo(s) left out", name, len(photos) - len(kept))
        if kept:
            out.append(PhotoSet(name, kind, [d for _, d in kept], [r.label for r, _ in kept]))
    return out


def compare_versions(
    champion_uri: str,
    challenger_uri: str,
    *,
    data: DataConfig,
    rule: ChampionConfig,
    only: Sequence[str] | None = None,
    folders: dict[str, str] | None = None,
    captures: str | None = None,
) -> dict[str, Any]:
    """`python -m training compare`: two published versions on the held-out parts of `data`'s
    train sources (split as a run splits them), its eval sources, `folders` (name -> a dataset
    folder, scored whole) and both golden sets; `only` keeps just the named sources of `data`.
    With `captures` (a capture store or a folder: `wastesort.shadow_cli`), the result also holds
    the shadow report: how the two would have decided on those field photos (`shadow`).

    Raises:
        DataError: a source cannot be read or split.
        ModelError: a version cannot be loaded or verified.
    """
    champion, challenger = Classifier.load(champion_uri), Classifier.load(challenger_uri)
    chosen = [s for s in data.sources if only is None or s.name in only]
    unknown = sorted(set(only or ()) - {s.name for s in data.sources})
    if unknown:
        raise DataError(
            f"--sources: {', '.join(unknown)} not in the data config "
            f"({', '.join(s.name for s in data.sources)}); give a folder as NAME=DIR"
        )
    sets: list[PhotoSet] = []
    trained: set[str] = set()
    if any(s.role == "train" for s in chosen):
        train_only = data.model_copy(update={"sources": data.by_role("train")})
        ds, _ = load_dataset(Config(data=train_only, input=InputConfig(height=32, width=32)))
        names = {s.name for s in chosen}
        sets += [s for s in dataset_sets(ds) if s.name.split("/")[0] in names]
        trained = {ds.items[i].sha256 for part in ("train", "val") for i in ds.indices(part)}
    extra = [s for s in chosen if s.role == "eval"] + [
        SourceConfig(name=name, dir=folder, role="eval") for name, folder in (folders or {}).items()
    ]
    for source in extra:
        found = folder_sets(source, challenger.labels, data.extensions)
        sets += found
    goldens = [
        golden_of(clf, uri, role)
        for role, clf, uri in (
            (CHAMPION, champion, champion_uri),
            (CHALLENGER, challenger, challenger_uri),
        )
    ]
    result = compare(champion, challenger, [*sets, *(g for g in goldens if g)])
    result["verdict"] = verdict(result, rule)
    seen = {
        hashlib.sha256(image).hexdigest()
        for s in sets
        for image in s.images
        if s.kind != per_source.HELD_OUT
    }
    if trained & seen:
        result["warnings"] = [
            f"{len(trained & seen)} scored photo(s) are in the challenger's train or validation "
            "split of the data config"
        ]
    if captures is not None:
        result["shadow"], _ = shadow_cli.build(champion_uri, challenger_uri, captures)
    return result
