"""Dataset folders: the one reader of `<label>/<file>` + `index.csv`, shared by training and the
review export; standard library only."""

from __future__ import annotations

import ast
import csv
import hashlib
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES
from wastesort.dataset import (
    COLUMNS,
    DatasetError,
    Record,
    read_folder,
    read_index,
    write_index,
)


def _write(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _index(root: Path, header: list[str], rows: list[list[str]]) -> None:
    with (root / "index.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    rows = []
    for rel, label, group in [
        ("metal/a.jpg", "metal", "g1"),
        ("plastic/b.jpg", "plastic", "g1"),  # a group may hold two labels
        ("plastic/c.jpg", "plastic", ""),
    ]:
        rows.append([rel, label, group, f"src/{rel}", _write(root, rel, rel.encode())])
    _index(root, list(COLUMNS), rows)
    digest = _write(root, "unmapped/food/x.jpg", b"food")
    _index(root / "unmapped", list(COLUMNS), [["food/x.jpg", "food", "", "", digest]])
    return root


def test_an_indexed_folder_reads_its_rows_groups_and_unmapped_part(indexed: Path):
    folder = read_folder(indexed)
    assert folder.indexed
    assert folder.labels == ("metal", "plastic")
    assert [r.path for r in folder.records] == ["metal/a.jpg", "plastic/b.jpg", "plastic/c.jpg"]
    assert [r.unit for r in folder.records] == ["g1", "g1", "plastic/c.jpg"]  # empty: its own
    assert folder.records[0].source_path == "src/metal/a.jpg"
    assert folder.records[0].sha256 == hashlib.sha256(b"metal/a.jpg").hexdigest()
    assert [(r.path, r.label) for r in folder.unmapped] == [("unmapped/food/x.jpg", "food")]
    assert folder.read(folder.unmapped[0]) == b"food"


def test_an_index_without_group_or_sha256_columns_means_one_group_per_file(tmp_path: Path):
    root = tmp_path / "set"
    _write(root, "glass/a.jpg", b"a")
    _write(root, "glass/b.jpg", b"b")
    _write(root, "glass/unlisted.jpg", b"c")
    _index(root, ["path", "label"], [["glass/a.jpg", "glass"], ["glass/b.jpg", "glass"]])
    folder = read_folder(root)
    assert [r.unit for r in folder.records] == ["glass/a.jpg", "glass/b.jpg"]
    assert folder.records[1].sha256 == hashlib.sha256(b"b").hexdigest()
    assert folder.unindexed == 1  # on disk, not in the index: not read, but counted


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["../escape.jpg", "glass", ""]], r"must be relative and inside"),
        ([["/etc/passwd", "glass", ""]], r"must be relative and inside"),
        ([["glass/missing.jpg", "glass", ""]], r"line 2: glass/missing.jpg does not exist"),
        ([["glass/a.jpg", "", ""]], r"empty label"),
        ([["glass/a.jpg", "glass", ""], ["glass/a.jpg", "glass", ""]], r"line 3: .* twice"),
        ([["glass/a.jpg", "glass", "0" * 64]], r"glass/a.jpg has sha256 .* the index says 000"),
    ],
)
def test_a_bad_index_row_is_a_clear_error(tmp_path: Path, rows: list[list[str]], message: str):
    root = tmp_path / "set"
    _write(root, "glass/a.jpg", b"a")
    _index(root, ["path", "label", "sha256"], rows)
    with pytest.raises(DatasetError, match=message):
        read_folder(root)


def test_an_index_without_a_label_column_is_a_clear_error(tmp_path: Path):
    root = tmp_path / "set"
    _write(root, "glass/a.jpg", b"a")
    _index(root, ["path", "sha256"], [["glass/a.jpg", ""]])
    with pytest.raises(DatasetError, match=r"missing column\(s\) label"):
        read_index(root)


def test_class_folders_without_an_index_read_the_same_way(tmp_path: Path):
    root = tmp_path / "set"
    for rel in ("glass/b.jpg", "glass/a.JPG", "glass/sub/c.png", "glass/notes.txt", "paper/d.jpg"):
        _write(root, rel, rel.encode())
    (root / "trash").mkdir()  # an empty class folder is still a class (training refuses it)
    (root / ".hidden").mkdir()
    _write(root, "unmapped/food/x.jpg", b"x")
    folder = read_folder(root)
    assert not folder.indexed
    assert folder.labels == ("glass", "paper", "trash")
    assert [r.path for r in folder.records] == [
        "glass/a.JPG",
        "glass/b.jpg",
        "glass/sub/c.png",
        "paper/d.jpg",
    ]
    assert [(r.path, r.label) for r in folder.unmapped] == [("unmapped/food/x.jpg", "food")]
    with pytest.raises(DatasetError, match="not a folder"):
        read_folder(tmp_path / "nope")


def test_the_bundled_samples_read_as_a_class_folder_set():
    folder = read_folder(SAMPLES)
    assert folder.labels == ("cardboard", "glass", "metal", "paper", "plastic", "trash")
    assert len(folder.records) == 18
    assert all(r.label == r.path.split("/")[0] for r in folder.records)


def test_write_index_round_trips_an_export(indexed: Path, tmp_path: Path):
    folder = read_folder(indexed)
    copy = tmp_path / "copy"
    for record in (*folder.records, *folder.unmapped):
        _write(copy, record.path, folder.read(record))
    write_index(copy, [*folder.records, *folder.unmapped])
    again = read_folder(copy)
    assert again.records == folder.records
    assert again.unmapped == folder.unmapped
    assert (copy / "unmapped" / "index.csv").read_text().startswith(",".join(COLUMNS))
    assert Record("a.jpg", "glass", "0" * 64).unit == "a.jpg"


def test_the_reader_imports_the_standard_library_only():
    tree = ast.parse((ROOT / "wastesort" / "dataset.py").read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
