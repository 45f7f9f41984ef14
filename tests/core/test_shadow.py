"""Shadow scoring (issue 39): two tiny models on a folder made here; every expectation comes from
each model's own `Classifier.predict`, so the counts are known, not hard-coded."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import LABELS, SAMPLES, moto_bucket, tiny_fields
from wastesort import contact_sheet, shadow
from wastesort.capture import CaptureStore
from wastesort.classifier import Classifier
from wastesort.cli import main
from wastesort.registry import Registry
from wastesort.scoring import UNCERTAIN

SWAPPED = ["cardboard", "glass", "metal", "plastic", "paper", "trash"]
"""The challenger reads the same logits with paper and plastic swapped, sharper (temperature
0.5) and with a higher threshold: it agrees on some photos, swaps others, doubts others."""
DECISIONS = [*sorted(LABELS), UNCERTAIN]


@pytest.fixture
def models(tmp_path: Path, tiny_int8: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(champion URI, challenger URI) in one local registry."""
    monkeypatch.setenv("WASTESORT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "registry"
    registry = Registry.from_uri(root)
    registry.publish(
        tiny_int8,
        version="tiny-1",
        aliases=["production"],
        **tiny_fields(uncertain_threshold=0.175),
    )
    registry.publish(
        tiny_int8,
        version="tiny-2",
        aliases=["candidate"],
        **tiny_fields(labels=SWAPPED, temperature=0.5, uncertain_threshold=0.2),
    )
    return f"{root}@production", f"{root}@candidate"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """The sample photos as a dataset folder (class folders), plus one unreadable file."""
    out = tmp_path / "photos"
    shutil.copytree(SAMPLES, out, ignore=shutil.ignore_patterns("*.md", "LICENSE"))
    (out / "glass" / "broken.jpg").write_bytes(b"not a jpeg")
    return out


def expected(champion: str, challenger: str, files: list[Path]) -> list[tuple[str, dict, dict]]:
    """(path, champion's answer, challenger's answer) of every readable file."""
    a, b = Classifier.load(champion), Classifier.load(challenger)
    out = []
    for file in files:
        data = file.read_bytes()
        if file.name == "broken.jpg":
            continue
        out.append((str(file), a.predict(data).to_dict(), b.predict(data).to_dict()))
    return out


def shadow_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["shadow", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_counts_match_each_models_own_predictions(models, dataset, capsys):
    champion, challenger = models
    truth = expected(champion, challenger, sorted(dataset.rglob("*.jpg")))
    matrix = Counter((a["decision"], b["decision"]) for _, a, b in truth)
    # the setup is worth testing: agreement, a swapped class and doubt all occur
    assert any(x == y for x, y in matrix) and any(x != y != UNCERTAIN for x, y in matrix)
    assert any(y == UNCERTAIN != x for x, y in matrix)

    report = shadow_json(
        capsys, "--champion", champion, "--challenger", challenger, "--captures", str(dataset)
    )
    assert report["n"] == len(truth) == 18
    assert report["left_out"]["refused"] == {"champion": 1, "challenger": 1}
    assert report["matrix"] == {a: {b: matrix[a, b] for b in DECISIONS} for a in DECISIONS}
    agree = sum(matrix[d, d] for d in DECISIONS)
    assert report["agreement"] == round(agree / len(truth), 4)
    assert report["champion"]["version"] == "tiny-1" and report["challenger"]["version"] == "tiny-2"
    for role, side in (("champion", 1), ("challenger", 2)):
        made = Counter(t[side]["decision"] for t in truth)
        shares = report[role]["decided_as"]
        assert shares == {d: round(made[d] / len(truth), 4) for d in DECISIONS}
        assert report[role]["decided"] == round(1 - made[UNCERTAIN] / len(truth), 4)


def test_labelled_subset_accuracy_and_confidently_wrong(models, dataset, capsys):
    champion, challenger = models
    truth = expected(champion, challenger, sorted(dataset.rglob("*.jpg")))
    report = shadow_json(
        capsys, "--champion", champion, "--challenger", challenger, "--captures", str(dataset)
    )
    assert report["labelled"] == 18
    for role, side in (("champion", 1), ("challenger", 2)):
        label = [Path(p).parent.name for p, *_ in truth]
        right = [t[side]["predicted_class"] == y for t, y in zip(truth, label, strict=True)]
        decided = [t[side]["decision"] != UNCERTAIN for t in truth]
        figures = report[role]["labelled"]
        assert figures["n"] == 18
        assert figures["accuracy"] == round(sum(right) / 18, 4)
        wrong = sum(d and not r for r, d in zip(right, decided, strict=True))
        assert figures["confidently_wrong"] == round(wrong / 18, 4)


def test_plain_folder_is_unlabelled_and_text_is_the_default(models, dataset, capsys, tmp_path):
    champion, challenger = models
    plain = tmp_path / "plain"
    plain.mkdir()
    for file in sorted(dataset.rglob("*.jpg"))[:5]:
        shutil.copy(file, plain / f"{file.parent.name}-{file.name}")
    report = shadow_json(
        capsys, "--champion", champion, "--challenger", challenger, "--captures", str(plain)
    )
    assert report["labelled"] == 0 and report["champion"]["labelled"]["accuracy"] is None
    args = ["shadow", "--champion", champion, "--challenger", challenger, "--captures", str(plain)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("shadow: champion tiny-1 vs challenger tiny-2 on 4 photos (0 labelled)")
    assert f"agreement: {report['agreement'] * 100:.1f}%" in text


def test_capture_store_labels_are_the_latest_event(models, tmp_path, capsys):
    """A capture store's label events label its photos; `not_waste` is none of the classes."""
    champion, challenger = models
    store = CaptureStore.from_uri(str(tmp_path / "store"))
    a = Classifier.load(champion)
    files = sorted(SAMPLES.rglob("*.jpg"))[:6]
    ids, plan = [], [("glass", "metal"), ("paper",), ("not_waste",), (), (), ()]
    for n, (file, labels) in enumerate(zip(files, plan, strict=True)):
        when = datetime(2026, 12, 1 + n, 9, tzinfo=UTC)
        record = store.save(
            file.read_bytes(), a.predict(file.read_bytes()), reason="sampled", now=when
        )
        ids.append(record.id)
        for minute, label in enumerate(labels):
            store.add_label(
                record.id, label, by="r", source="review", now=when.replace(minute=minute + 1)
            )
    report = shadow_json(
        capsys,
        "--champion",
        champion,
        "--challenger",
        challenger,
        "--captures",
        str(tmp_path / "store"),
    )
    assert report["n"] == 6 and report["labelled"] == 3
    photos = {
        Path(p).stem: Classifier.load(champion).predict(Path(p).read_bytes()) for p in _paths(store)
    }
    right = [photos[ids[0]].predicted_class == "metal", photos[ids[1]].predicted_class == "paper"]
    figures = report["champion"]["labelled"]
    assert figures["n"] == 2 and figures["accuracy"] == round(sum(right) / 2, 4)
    assert figures["none_of_the_classes"]["n"] == 1


def _paths(store: CaptureStore) -> list[str]:
    from wastesort.capture import key_of

    return [f"{store.uri}/{key_of(c.id)}.jpg" for c in store.captures()]


def test_capture_store_on_s3(models, monkeypatch, capsys):
    """`--captures s3://bucket/prefix`: the photos are read from S3 (moto), labels too."""
    champion, challenger = models
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with moto_bucket("shadow-captures"):
        store = CaptureStore.from_uri("s3://shadow-captures/field")
        a = Classifier.load(champion)
        for file in sorted(SAMPLES.rglob("*.jpg"))[:3]:
            record = store.save(file.read_bytes(), a.predict(file.read_bytes()), reason="sampled")
            store.add_label(record.id, file.parent.name, by="r", source="review")
        uri = "s3://shadow-captures/field"
        report = shadow_json(
            capsys, "--champion", champion, "--challenger", challenger, "--captures", uri
        )
    assert report["n"] == 3 and report["labelled"] == 3
    assert all(d["path"].startswith(f"{uri}/captures/api/") for d in report["disagreements"])


def test_sheet_is_written_with_the_largest_disagreements(models, dataset, capsys, tmp_path):
    champion, challenger = models
    sheet = tmp_path / "sheet.png"
    report = shadow_json(
        capsys,
        "--champion",
        champion,
        "--challenger",
        challenger,
        "--captures",
        str(dataset),
        "--sheet",
        str(sheet),
        "--worst",
        "5",
    )
    shown = report["disagreements"]
    assert len(shown) == 5 and report["sheet"] == str(sheet)
    distances = [d["distance"] for d in shown]
    assert distances == sorted(distances, reverse=True) and distances[0] > 0
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.size == contact_sheet.size(5, lines=4)
        lo, hi = image.convert("L").getextrema()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert hi - lo > 100  # photos and captions, not a blank page
    assert colours is not None and len(colours) > 500


def test_from_results_gives_the_same_report_as_scoring(models, dataset, capsys, tmp_path):
    """Two results files (what `classify --json` and a bulk job write) give the report that
    scoring here gives, on a pool of two worker processes too."""
    champion, challenger = models
    args = ["--champion", champion, "--challenger", challenger, "--captures", str(dataset)]
    scored = shadow_json(capsys, *args, "--workers", "2")
    files = []
    for name, uri in (("champion", champion), ("challenger", challenger)):
        assert main(["classify", str(dataset), "--model", uri, "--json"]) == 1  # broken.jpg
        out = tmp_path / f"{name}.jsonl"
        out.write_text(capsys.readouterr().out)
        files.append(str(out))
    read = shadow_json(capsys, "--from-results", *files, "--captures", str(dataset))
    assert {**read, "source": ""} == {**scored, "source": ""}
    unlabelled = shadow_json(capsys, "--from-results", *files)
    assert unlabelled["labelled"] == 0 and unlabelled["matrix"] == scored["matrix"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--champion", "m@production"],
            "shadow needs --challenger, --captures (or --from-results A B)",
        ),
        (["--from-results", "a.jsonl", "b.jsonl", "--champion", "x"], "--from-results reads both"),
        (["--from-results", "{bad}", "{good}"], "line 2 is not a classification record"),
        (["--from-results", "{missing}", "{good}"], "cannot read"),
        (["--from-results", "{good}", "{good}", "--sheet", "{nowhere}/s.png"], "no folder"),
        (
            ["--captures", "{nowhere}", "--champion", "{champion}", "--challenger", "{challenger}"],
            "not a folder",
        ),
        (
            ["--captures", "{empty}", "--champion", "{champion}", "--challenger", "{challenger}"],
            "no images in",
        ),
        (
            [
                "--captures",
                "{empty}",
                "--champion",
                "{registry}@v404",
                "--challenger",
                "{challenger}",
            ],
            "'v404'",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(models, tmp_path, capsys, args, message):
    champion, challenger = models
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"path": "a.jpg", "error": {"code": "x", "message": "y"}}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"path": "b.jpg", "decision": "glass"}\n')
    (tmp_path / "empty").mkdir()
    names = {
        "good": good,
        "bad": bad,
        "missing": tmp_path / "missing.jsonl",
        "nowhere": tmp_path / "nowhere",
        "empty": tmp_path / "empty",
        "champion": champion,
        "challenger": challenger,
        "registry": champion.split("@")[0],
    }
    assert main(["shadow", *(a.format(**names) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wastesort: error: ") and message in err and "\n" not in err


def test_argparse_errors_exit_2():
    for args in (["shadow", "--workers", "0"], ["shadow", "--from-results", "only-one.jsonl"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2


def record(path: str, decision: str, confidences: dict[str, float], version: str = "v") -> dict:
    best = max(confidences, key=confidences.__getitem__)
    return {
        "path": path,
        "predicted_class": best,
        "confidence": confidences[best],
        "all_confidences": confidences,
        "decision": decision,
        "model_version": version,
    }


def test_report_pairs_by_path_and_counts_what_was_left_out():
    old = [
        record("a", "glass", {"glass": 0.9, "metal": 0.1}),
        record("b", "uncertain", {"glass": 0.5, "metal": 0.5}),
        {"path": "c", "error": {"code": "invalid_image", "message": "x"}},
        record("only-old", "glass", {"glass": 1.0, "metal": 0.0}),
    ]
    new = [
        record("b", "metal", {"glass": 0.2, "metal": 0.8}),
        record("a", "glass", {"glass": 0.9, "metal": 0.1}),
        record("c", "glass", {"glass": 1.0, "metal": 0.0}),
    ]
    data = shadow.report(old, new, {"a": "glass", "b": "glass"})
    assert data["n"] == 2 and data["agreement"] == 0.5
    assert data["matrix"]["uncertain"]["metal"] == 1 and data["matrix"]["glass"]["glass"] == 1
    assert data["left_out"] == {
        "refused": {"champion": 1, "challenger": 0},
        "only_champion": 1,
        "only_challenger": 0,
    }
    assert [d["path"] for d in data["disagreements"]] == ["b"]  # `a` answered the same
    assert data["disagreements"][0]["distance"] == pytest.approx(0.3)
    assert data["champion"]["labelled"]["accuracy"] == 1.0  # argmax is right on both
    assert data["champion"]["labelled"]["confidently_wrong"] == 0.0
    assert data["challenger"]["labelled"] == {
        "n": 2,
        "accuracy": 0.5,
        "confidently_wrong": 0.5,
        "decided": 1.0,
        "none_of_the_classes": {"n": 0, "uncertain": None},
    }
    with pytest.raises(ValueError, match="appears twice"):
        shadow.report([*old, old[0]], new)


def test_contact_sheet_draws_unreadable_photos_grey_and_an_empty_sheet(tmp_path):
    out = contact_sheet.write(
        [contact_sheet.Tile(b"not an image", ["x" * 80]), contact_sheet.Tile(None)],
        tmp_path / "two.png",
        lines=1,
    )
    with Image.open(out) as image:
        assert image.size == contact_sheet.size(2, lines=1)
        middle = contact_sheet.PAD * 2 + contact_sheet.LINE + contact_sheet.THUMB // 2
        assert image.convert("RGB").getpixel((middle, middle)) == contact_sheet.MISSING
    with Image.open(contact_sheet.write([], tmp_path / "none.png")) as empty:
        assert empty.size == contact_sheet.size(0)
    assert contact_sheet.size(5, columns=4) == contact_sheet.size(8, columns=4)
