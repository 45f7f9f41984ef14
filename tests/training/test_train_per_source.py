"""Per-source tables: decisions included, and photos of none of the classes."""

from __future__ import annotations

import numpy as np
import pytest

from training import per_source
from training.per_source import EVAL, HELD_OUT, UNMAPPED, Scored


def _scored(name, kind, truth, predicted, confidence):
    return Scored(name, kind, truth, predicted, np.array(confidence), threshold=0.5)


def test_a_row_counts_decisions_and_confident_mistakes():
    s = _scored(
        "field",
        EVAL,
        ["glass", "glass", "metal", "metal"],
        ["glass", "metal", "metal", "glass"],
        [0.9, 0.8, 0.4, 0.3],
    )
    row = per_source.row(s)
    assert row["n"] == 4
    assert row["accuracy"] == 0.5
    assert row["decided"] == 0.5  # 0.9 and 0.8 are at or above the threshold
    assert row["accuracy_decided"] == 0.5
    assert row["confidently_wrong"] == 0.25  # glass -> metal at 0.8
    assert row["recall"] == {"glass": 0.5, "metal": 0.5}
    assert row["macro_f1"] == pytest.approx(0.5)


def test_macro_f1_is_over_the_classes_the_source_holds():
    s = _scored("cans", HELD_OUT, ["metal", "metal"], ["metal", "paper"], [0.9, 0.9])
    row = per_source.row(s)
    assert row["macro_f1"] == pytest.approx(2 / 3, abs=1e-4)  # metal only: P=1, R=0.5
    assert row["recall"] == {"metal": 0.5}


def test_photos_of_none_of_the_classes_should_come_out_uncertain():
    s = _scored(
        "x/unmapped",
        UNMAPPED,
        ["food"] * 4,
        ["paper", "trash", "paper", "glass"],
        [0.9, 0.2, 0.7, 0.1],
    )
    row = per_source.row(s)
    assert row == {"kind": UNMAPPED, "n": 4, "uncertain": 0.5, "decided_as": {"paper": 2}}


def test_the_table_pools_the_field_check_and_the_union():
    sets = [
        _scored("trashnet", HELD_OUT, ["glass"] * 4, ["glass"] * 4, [0.9] * 4),
        _scored("field-a", EVAL, ["glass", "metal"], ["metal", "metal"], [0.9, 0.9]),
        _scored("field-b", EVAL, ["paper"], ["paper"], [0.2]),
        _scored("field-a/unmapped", UNMAPPED, ["food"], ["glass"], [0.1]),
        _scored("golden:x", per_source.GOLDEN, ["glass"], ["glass"], [0.99]),
    ]
    rows = per_source.table(sets)
    assert list(rows) == [
        "trashnet",
        "field-a",
        "field-b",
        "field-a/unmapped",
        "golden:x",
        "field",
        "union",
    ]
    assert rows["field"]["n"] == 3
    assert rows["field"]["accuracy"] == pytest.approx(0.6667)
    assert rows["union"]["n"] == 7  # neither the unmapped photos nor the golden set
    assert rows["union"]["accuracy"] == pytest.approx(6 / 7, abs=1e-4)
    lines = "\n".join(per_source.render(rows, ["glass", "metal", "paper"]))
    assert "| field-a | eval | 2 | 50.0% |" in lines
    assert "field-a/unmapped (1 photos of none of the classes): 100.0% answered" in lines


def test_scores_become_answers_in_label_order():
    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    s = per_source.scored_from_probs(
        "s", EVAL, ["metal", "glass"], probs, labels=["glass", "metal", "paper"], threshold=0.65
    )
    assert list(s.predicted) == ["metal", "glass"]
    assert s.decided().tolist() == [True, False]
    empty = per_source.scored_from_probs("e", EVAL, [], [], labels=["a", "b"], threshold=0.5)
    assert per_source.row(empty) == {"kind": EVAL, "n": 0}
