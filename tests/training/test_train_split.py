"""The split: TrashNet's stays exactly what it was before several sources (the digests below
were computed by the one-source splitter before it learned groups and sources), groups never
cross sides, and each source is split on its own."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pytest

from tests.conftest import ROOT, SAMPLES
from training.config import load_config
from training.data import Item, load_dataset, split_items
from training.source_config import DataConfig
from training.split import SPLITS, SplitError

LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]
TRASHNET = ROOT.parent / "shared" / "data" / "trashnet"


def digest(items: list[Item], split: dict[str, list[int]]) -> str:
    """sha256 over the sorted `split<TAB>path` lines of the train/val/test split."""
    lines = sorted(f"{name}\t{items[i].path}\n" for name in SPLITS for i in split[name])
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def synthetic() -> list[Item]:
    """117 photos in six classes of 7-32, twelve of them byte-for-byte duplicates."""
    items = []
    for c, label in enumerate(LABELS):
        for i in range(7 + 5 * c):
            content = hashlib.sha256(f"{label}-{i % (5 + 5 * c)}".encode()).hexdigest()
            items.append(Item(f"{label}/{label}{i}.jpg", label, content))
    return items


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        (1337, "7843ad121d6883cfb6086fde948d80a40acc28ac1cb3790340fd8929c737c445"),
        (1, "a936feb32d0f8798926926c63f19da789c264fa47b96978c6111c1dd524c5c34"),
    ],
)
def test_a_one_source_split_is_unchanged(seed: int, expected: str):
    items = synthetic()
    split, report = split_items(items, LABELS, DataConfig(split_seed=seed))
    assert digest(items, split) == expected
    assert report["duplicate_images"] == 12


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        (1337, "64cc0d4b19ec530903040a9aa268567b0a3e51127a16777d42d5cf017a3c5c18"),
        (7, "9185620b5359d007fc327a65f3184b1d7b8b2898e372fd369bc73434bcd17315"),
    ],
)
def test_the_committed_samples_split_as_before(seed: int, expected: str):
    cfg = load_config(None, [f"data.dir={SAMPLES}", "input.height=32", "input.width=32"])
    cfg.data.split_seed = seed
    ds, _ = load_dataset(cfg)
    assert digest(ds.items, ds.split) == expected


@pytest.mark.skipif(not TRASHNET.is_dir(), reason="needs ../shared/data/trashnet")
@pytest.mark.parametrize("with_drinking_waste", [False, True])
def test_trashnet_splits_exactly_as_the_bundled_models_were_trained(with_drinking_waste: bool):
    """The bundled models' TrashNet split (fingerprint f66d12a3..., test 305 photos): through
    `data.dir` with the default config's other sources (drinking-waste trains the current
    model, the earlier ones were TrashNet alone)."""
    overrides = [f"data.dir={TRASHNET}", "input.height=32", "input.width=32"]
    cfg = load_config(ROOT / "training" / "configs" / "default.yaml", overrides)
    cfg.data.test_include = (SAMPLES,)
    keep = {"trashnet", "realwaste-sample"} | ({"drinking-waste"} if with_drinking_waste else set())
    for source in cfg.data.sources:
        if source.name != "trashnet" and not source.dir.is_dir():
            if source.role == "train" and source.name in keep:
                pytest.skip(f"needs {source.dir}")
            keep.discard(source.name)
    cfg.data.sources = [s for s in cfg.data.sources if s.name in keep]
    ds, _ = load_dataset(cfg)
    trashnet = {n: [i for i in ds.split[n] if ds.items[i].source == "trashnet"] for n in SPLITS}
    assert digest(ds.items, trashnet) == (
        "31a7ee55d66c9d899148dd4ecb5b44e8c06486f776933ad4dfbc0062364432a0"
    )
    assert ds.report["sources"]["trashnet"]["fingerprint"].startswith("f66d12a348d1")
    if not with_drinking_waste:
        assert ds.fingerprint.startswith("f66d12a348d1")


def _grouped() -> list[Item]:
    """Two sources; `b` has groups of 1-4 photos, one group holding two labels."""
    items = [
        Item(f"{label}/a{i}.jpg", label, f"a-{label}-{i}", "a")
        for label in ("metal", "plastic")
        for i in range(12)
    ]
    for g in range(20):
        label = "metal" if g % 2 else "plastic"
        for k in range(1 + g % 4):
            items.append(Item(f"{label}/b{g}-{k}.jpg", label, f"b-{g}-{k}", "b", f"g{g}"))
    items.append(Item("plastic/mixed.jpg", "plastic", "b-mixed", "b", "g1"))  # g1 is metal
    items.append(Item("metal/copy.jpg", "metal", "b-3-0", "b", "other"))  # same bytes as g3
    return items


def test_no_group_lands_on_two_sides():
    items = _grouped()
    split, report = split_items(items, ["metal", "plastic"], DataConfig())
    side = {i: name for name in SPLITS for i in split[name]}
    by_group: dict[tuple[str, str], set[str]] = defaultdict(set)
    for i, item in enumerate(items):
        by_group[item.source, item.unit].add(side[i])
    assert all(len(sides) == 1 for sides in by_group.values())
    assert (
        side[items.index(Item("metal/copy.jpg", "metal", "b-3-0", "b", "other"))]
        == side[items.index(Item("metal/b3-0.jpg", "metal", "b-3-0", "b", "g3"))]
    )  # the same bytes join the groups
    b = report["sources"]["b"]
    assert b["units"] == 20
    assert b["units_of_several_labels"] == 1
    assert b["duplicate_images"] == 1
    assert {name: report["sources"]["a"]["split_sizes"][name] for name in SPLITS} == {
        "train": 16,
        "val": 4,
        "test": 4,
    }


def test_each_source_splits_on_its_own():
    items = _grouped()
    both, _ = split_items(items, ["metal", "plastic"], DataConfig())
    only_a = [it for it in items if it.source == "a"]
    alone, _ = split_items(only_a, ["metal", "plastic"], DataConfig())
    a_count = len(only_a)  # `a` comes first: its indices are the same in both lists
    assert {n: [i for i in both[n] if i < a_count] for n in SPLITS} == alone


def test_a_photo_an_earlier_source_holds_is_left_to_that_source():
    items = [Item(f"glass/{i}.jpg", "glass", f"h{i}", "a") for i in range(6)]
    items += [Item(f"glass/{i}.jpg", "glass", f"h{i}", "b") for i in range(3)]
    items += [Item(f"glass/x{i}.jpg", "glass", f"x{i}", "b") for i in range(6)]
    split, report = split_items(items, ["glass"], DataConfig())
    used = {i for name in SPLITS for i in split[name]}
    assert not used & {6, 7, 8}
    assert report["sources"]["b"]["in_earlier_source_images"] == 3


def test_a_class_with_too_few_groups_names_its_source():
    items = [Item(f"glass/{i}.jpg", "glass", f"h{i}", "a") for i in range(6)]
    items += [Item(f"glass/{i}.jpg", "glass", f"k{i}", "b", "one") for i in range(5)]
    with pytest.raises(SplitError, match=r"source 'b': class 'glass' has 1 distinct"):
        split_items(items, ["glass"], DataConfig())


def test_the_split_fractions_apply_to_groups():
    items = [
        Item(f"glass/{g}-{k}.jpg", "glass", f"{g}-{k}", "s", f"g{g}")
        for g in range(20)
        for k in range(3)
    ]
    split, _ = split_items(items, ["glass"], DataConfig())
    assert {n: len(split[n]) // 3 for n in SPLITS} == {"train": 14, "val": 3, "test": 3}
