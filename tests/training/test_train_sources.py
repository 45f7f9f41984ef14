"""`data.sources`: several photo sets in one run, each checked before any work, with a clear
error naming its config key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.training.conftest import make_folder
from training.config import ConfigError, load_config
from training.data import DataError, load_dataset, write_split
from training.sources import resolve

SMALL = ["input.height=32", "input.width=32"]


def _cfg(*overrides: str):
    return load_config(None, [*SMALL, *overrides])


def _source(name: str, folder: Path, role: str = "train", extra: str = "") -> str:
    return f"data.sources.{name}={{dir: {folder}, role: {role}{extra}}}"


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    """A six-image-per-class train set of three classes, and a two-class eval set."""
    main = make_folder(tmp_path / "main", {"glass": 6, "metal": 6, "paper": 6})
    field = make_folder(tmp_path / "field", {"bottle": 2, "metal": 2}, seed=5)
    return main, field


def test_data_dir_is_one_train_source_named_trashnet(tmp_path: Path):
    cfg = _cfg(f"data.dir={tmp_path}")
    [source] = cfg.data.sources
    assert (source.name, source.dir, source.role) == ("trashnet", tmp_path, "train")
    assert cfg.data.dir is None  # resolved: the sources say it all
    default = _cfg()
    assert default.data.sources[0].dir == Path("data/trashnet")


def test_data_dir_sets_the_trashnet_source_of_a_config_with_several(tmp_path: Path):
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "training" / "configs" / "default.yaml",
        [f"data.dir={tmp_path}"],
    )
    assert [(s.name, s.role) for s in cfg.data.sources] == [
        ("trashnet", "train"),
        ("realwaste-sample", "eval"),
        ("drinking-waste", "train"),
    ]
    assert cfg.data.source("trashnet").dir == tmp_path
    with pytest.raises(ConfigError, match=r"data\.dir names the 'trashnet' source"):
        _cfg(_source("other", tmp_path), f"data.dir={tmp_path}")


def test_sources_are_addressed_by_name_in_overrides(tmp_path: Path):
    cfg = _cfg(
        _source("a", tmp_path),
        _source("b", tmp_path, "eval"),
        "data.sources.b.share=2",
        "data.sources.b.class_map={bottle: glass, cup: null}",
    )
    assert [(s.name, s.role, s.share) for s in cfg.data.sources] == [
        ("a", "train", 1.0),
        ("b", "eval", 2.0),
    ]
    assert cfg.data.source("b").class_map == {"bottle": "glass", "cup": None}
    dropped = _cfg(_source("a", tmp_path), _source("b", tmp_path, "eval"), "data.sources.b=null")
    assert [s.name for s in dropped.data.sources] == ["a"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.sources.a={dir: x, role: train}", "data.sources.a.role=test"], r"role"),
        (["data.sources.a={dir: x, role: eval}"], r"at least one source needs role 'train'"),
        (["data.sources.A={dir: x, role: train}"], r"data\.sources\.0\.name"),
        (["data.sources.a={role: train}"], r"data\.sources\.0\.dir"),
        (["data.sources.a=3"], r"data\.sources\.a: a source is a mapping"),
        (["data.sources.a={dir: x, role: train}", "data.sources.a.shares=2"], r"shares"),
        (["registry.aliases=[production]"], r"registry\.aliases: 'production' is the champion"),
        (["champion.force=''"], r"champion\.force"),
        (["champion.better_on=[everything]"], r"champion\.better_on"),
        (["data.labels=[glass, glass]"], r"data\.labels: a classifier needs at least 2"),
    ],
)
def test_a_bad_source_or_rule_names_its_key(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=message):
        _cfg(*overrides)


def test_an_unknown_source_dir_is_a_clear_error(two, tmp_path: Path):
    main, _ = two
    cfg = _cfg(_source("main", main), _source("field", tmp_path / "nowhere", "eval"))
    with pytest.raises(DataError, match=r"data\.sources\.field\.dir: .*nowhere is not a folder"):
        resolve(cfg.data)


def test_a_class_map_to_an_unknown_class_is_a_clear_error(two):
    main, field = two
    cfg = _cfg(
        _source("main", main),
        _source("field", field, "eval", ", class_map: {bottle: glas}"),
    )
    with pytest.raises(
        DataError, match=r"data\.sources\.field\.class_map\.bottle: 'glas' is not a class"
    ):
        resolve(cfg.data)


def test_a_class_map_of_a_label_the_folder_lacks_is_a_clear_error(two):
    main, field = two
    cfg = _cfg(_source("main", main), _source("field", field, "eval", ", class_map: {can: metal}"))
    with pytest.raises(DataError, match=r"class_map: 'can' is not a label in .*field"):
        resolve(cfg.data)


def test_an_eval_label_that_is_no_class_must_be_mapped(two):
    main, field = two
    with pytest.raises(DataError, match=r"label 'bottle' is not a class .*class_map\.bottle="):
        resolve(_cfg(_source("main", main), _source("field", field, "eval")).data)
    labels, sources = resolve(
        _cfg(
            _source("main", main), _source("field", field, "eval", ", class_map: {bottle: glass}")
        ).data
    )
    assert labels == ["glass", "metal", "paper"]
    assert sorted({r.label for r in sources[1].records}) == ["glass", "metal"]
    labels, sources = resolve(
        _cfg(
            _source("main", main), _source("field", field, "eval", ", class_map: {bottle: null}")
        ).data
    )
    assert {r.label for r in sources[1].unmapped} == {"bottle"}  # none of the classes


def test_an_eval_source_overlapping_a_train_source_by_sha256_is_a_clear_error(two):
    main, field = two
    shutil.copy(main / "metal" / "metal3.jpg", field / "metal" / "renamed.jpg")
    cfg = _cfg(
        _source("main", main),
        _source("field", field, "eval", ", class_map: {bottle: glass}"),
    )
    with pytest.raises(
        DataError,
        match=r"data\.sources\.field: 1 photo\(s\) are also in train source 'main' "
        r"\(same sha256, e\.g\. metal/renamed\.jpg = metal/metal3\.jpg\)",
    ):
        resolve(cfg.data)


def test_counts_per_source_and_class_and_every_part_in_the_split_file(two, tmp_path: Path):
    main, field = two
    extra = make_folder(tmp_path / "extra", {"metal": 5, "paper": 4}, seed=9)
    cfg = _cfg(
        _source("main", main),
        _source("extra", extra),
        _source("field", field, "eval", ", class_map: {bottle: null}"),
    )
    ds, pixels = load_dataset(cfg)
    assert ds.labels == ["glass", "metal", "paper"]
    assert len(pixels) == len(ds.items) == 18 + 9 + 4
    assert ds.report["per_source_class"] == {
        "main": {"glass": 6, "metal": 6, "paper": 6},
        "extra": {"metal": 5, "paper": 4},
        "field": {"metal": 2},
    }
    assert ds.report["sources"]["field"]["unmapped"] == 2
    assert ds.report["sources"]["extra"]["split_sizes"] == {"train": 5, "val": 2, "test": 2}
    assert [ds.items[i].source for i in ds.indices("eval")] == ["field", "field"]
    assert [ds.items[i].label for i in ds.indices("unmapped")] == ["bottle", "bottle"]
    assert ds.name(ds.indices("eval")[0]) == "field:metal/metal0.jpg"
    lines = write_split(ds, tmp_path / "split.csv").read_text().splitlines()
    assert lines[0] == "split,source,path,label,group,sha256"
    assert sum(line.startswith("eval,field,") for line in lines) == 2
    assert sum(line.startswith("unmapped,field,bottle/") for line in lines) == 2
    fingerprint = ds.fingerprint
    alone, _ = load_dataset(_cfg(_source("main", main), _source("extra", extra)))
    assert alone.fingerprint == fingerprint  # eval sources do not make the model


def test_a_train_source_with_an_empty_class_folder_is_a_clear_error(two):
    main, _ = two
    (main / "trash").mkdir()
    with pytest.raises(DataError, match=r"'trash' in .* has no readable images"):
        load_dataset(_cfg(_source("main", main)))
