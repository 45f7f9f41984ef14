"""`wastesort dataset export` (issue 35 §4): labelled captures -> a dataset folder that
`wastesort.dataset` reads back, incremental and deterministic."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.core.test_capture import gps_jpeg, prediction
from wastesort import cli
from wastesort.capture import CaptureStore
from wastesort.dataset import read_folder
from wastesort.export import export

DAY1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> tuple[CaptureStore, dict[str, str]]:
    """Five captures from two sources over two days, labelled in several ways."""
    captures = CaptureStore.from_uri(str(tmp_path / "store"))
    ids: dict[str, str] = {}
    plan = [
        ("glass", "api", DAY1, [("glass", "feedback")]),
        ("metal", "bin-7", DAY1, [("glass", "feedback"), ("metal", "review")]),  # disagreement
        ("junk", "bin-7", DAY2, [("not_waste", "review")]),
        ("fb", "api", DAY2, [("paper", "feedback")]),  # feedback only
        ("none", "api", DAY2, []),  # unlabelled
    ]
    for n, (name, source, when, labels) in enumerate(plan):
        record = captures.save(
            gps_jpeg((80 + n, 60)),
            prediction("uncertain"),
            reason="uncertain",
            source=source,
            now=when,
        )
        ids[name] = record.id
        for minute, (label, by) in enumerate(labels):
            captures.add_label(
                record.id, label, by="x", source=by, now=when.replace(minute=minute + 1)
            )
    return captures, ids


def test_export_reads_back_as_a_dataset_folder(store, tmp_path: Path):
    captures, ids = store
    out = tmp_path / "export"
    summary = export(captures, out)
    folder = read_folder(out)
    assert folder.indexed and folder.unindexed == 0
    assert {(r.path, r.label) for r in folder.records} == {
        (f"glass/{ids['glass']}.jpg", "glass"),
        (f"metal/{ids['metal']}.jpg", "metal"),
        (f"paper/{ids['fb']}.jpg", "paper"),
    }
    assert [(r.path, r.label) for r in folder.unmapped] == [
        (f"unmapped/not_waste/{ids['junk']}.jpg", "not_waste")
    ]
    groups = {r.source_path: r.group for r in (*folder.records, *folder.unmapped)}
    assert groups[ids["glass"]] == "api-2026-12-01" and groups[ids["junk"]] == "bin-7-2026-12-02"
    assert summary.unlabelled == 1 and summary.disagreements == 1 and summary.fetched == 4
    readme = (out / "README.md").read_text()
    assert "| `metal` | 1 |" in readme and "disagree (the latest one is used): 1" in readme


def test_export_is_incremental_and_deterministic(store, tmp_path: Path):
    captures, ids = store
    out = tmp_path / "export"
    export(captures, out)
    first = snapshot(out)
    again = export(captures, out)
    assert again.fetched == 0 and again.kept == 4 and snapshot(out) == first
    # a new label moves the photo; the old file goes, nothing else is fetched
    captures.add_label(ids["glass"], "plastic", by="alice", source="review", now=DAY2)
    moved = export(captures, out)
    assert moved.fetched == 1 and moved.removed == 1
    assert not (out / f"glass/{ids['glass']}.jpg").exists()
    assert (out / f"plastic/{ids['glass']}.jpg").is_file()
    # a fresh export of the same store gives the same bytes
    fresh = tmp_path / "fresh"
    export(captures, fresh)
    assert snapshot(fresh) == snapshot(out)


def test_reviewers_only_and_since(store, tmp_path: Path):
    captures, ids = store
    reviewed = read_folder(export_to(captures, tmp_path / "r", reviewers_only=True))
    assert {r.source_path for r in (*reviewed.records, *reviewed.unmapped)} == {
        ids["metal"],
        ids["junk"],
    }
    recent = read_folder(export_to(captures, tmp_path / "s", since=date(2026, 12, 2)))
    assert {r.source_path for r in (*recent.records, *recent.unmapped)} == {ids["fb"], ids["junk"]}


def export_to(captures: CaptureStore, out: Path, **options) -> Path:
    export(captures, out, **options)
    return out


def test_the_cli_exports(store, tmp_path: Path, capsys):
    captures, _ = store
    out = tmp_path / "cli"
    code = cli.main(
        [
            "dataset",
            "export",
            "--captures",
            captures.uri,
            "--out",
            str(out),
            "--since",
            "2026-12-01",
        ]
    )
    assert code == 0 and "4 photos" in capsys.readouterr().out
    assert len(read_folder(out).records) == 3


def test_an_export_is_a_training_source(store, tmp_path: Path):
    """The training pipeline reads the export like any other dataset folder (no TensorFlow:
    `training.sources` only reads folders)."""
    from training.source_config import DataConfig
    from training.sources import resolve

    captures, ids = store
    out = export_to(captures, tmp_path / "export")
    cfg = DataConfig.model_validate(
        {
            "sources": [{"name": "field", "dir": str(out), "role": "train"}],
            "labels": ["glass", "metal", "paper", "plastic"],
        }
    )
    classes, (source,) = resolve(cfg)
    assert classes == ["glass", "metal", "paper", "plastic"]
    assert {r.source_path for r in source.records} == {ids["glass"], ids["metal"], ids["fb"]}
    assert [r.label for r in source.unmapped] == ["not_waste"]
