"""Prediction records: keys by hour, a bounded batcher that sheds instead of growing, and a
reader that lists only the window's hour folders, on a folder and on (moto) S3."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance

from tests.conftest import LABELS, moto_bucket
from tests.core.test_reference import ALL_SAMPLES, referenced_registry  # noqa: F401 (a fixture)
from wastesort import Classifier, records
from wastesort.classifier import Prediction
from wastesort.cli import main
from wastesort.errors import RegistryError
from wastesort.registry.local import LocalStore
from wastesort.registry.s3 import S3Store
from wastesort.registry.store import RegistryStore

T0 = datetime(2026, 3, 4, 10, 15, tzinfo=UTC)


def _prediction(version: str = "v1", *, extras: bool = True) -> Prediction:
    scores = {name: (0.5 if i == 0 else 0.1) for i, name in enumerate(LABELS)}
    return Prediction(
        predicted_class=LABELS[0],
        confidence=0.5,
        all_confidences=scores,
        decision=LABELS[0],
        model_version=version,
        embedding=[0.25] * 32 if extras else None,
        image_stats={"brightness": 0.4, "contrast": 0.2, "colourfulness": 0.1, "blur": 90.0}
        if extras
        else None,
    )


def _record(at: datetime, version: str = "v1", source: str = "api") -> dict[str, Any]:
    return records.make_record(_prediction(version), source=source, at=at)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore(RegistryStore):
    """A LocalStore that remembers which prefixes were listed (and can be made to fail)."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalStore(root)
        self.uri = self.inner.uri
        self.listed: list[str] = []
        self.fail = False

    def read_manifest(self) -> None:
        return None

    def write_manifest(self, data: bytes, *, expected_etag: str | None) -> None:
        raise NotImplementedError

    def put_new(self, key: str, source: bytes | Path) -> bool:
        if self.fail:
            raise RegistryError("the store is down")
        return self.inner.put_new(key, source)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        self.listed.append(prefix)
        return self.inner.list(prefix, start_after)

    def download(self, key: str, dest: Path) -> None:
        self.inner.download(key, dest)


def test_key_is_the_records_hour_in_utc():
    local = datetime(2026, 3, 4, 1, 30, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    key = records.record_key("bin-7", local, "b1")
    assert key == "records/bin-7/2026/03/04/01/b1.jsonl"
    with pytest.raises(records.RecordError):
        records.record_key("../etc", T0, "b1")
    with pytest.raises(records.RecordError):
        records.record_key("api", T0, "../b")


def test_record_has_every_confidence_and_the_extras_but_no_image():
    record = records.make_record(_prediction(), source="bin-7", at=T0, device="bin-7")
    assert record["at"] == "2026-03-04T10:15:00.000Z"
    assert record["all_confidences"] == _prediction().all_confidences
    assert len(record["embedding"]) == 32 and record["image_stats"]["blur"] == 90.0
    assert record["device"] == "bin-7" and record["model_version"] == "v1"
    assert set(record) == {
        "at", "source", "device", "model_version", "predicted_class", "confidence",
        "all_confidences", "decision", "embedding", "image_stats",
    }  # fmt: skip
    bare = records.make_record(_prediction(extras=False), source="api", at=T0)
    assert "embedding" not in bare and "image_stats" not in bare and "device" not in bare


def test_batcher_sheds_when_full_and_never_writes_in_add(tmp_path: Path):
    store = CountingStore(tmp_path)
    batcher = records.RecordBatcher(store, "api", max_records=2, max_pending=3, clock=Clock())
    assert [batcher.add(_record(T0)) for _ in range(5)] == [True, True, True, False, False]
    assert batcher.dropped == 2 and len(batcher) == 3
    assert not list(store.inner.list("records/"))  # nothing written by add
    assert batcher.flush() == 3
    keys = list(store.inner.list("records/"))
    assert len(keys) == 2  # at most max_records per object
    assert sorted(len(store.inner.get(k).splitlines()) for k in keys) == [1, 2]


def test_batcher_is_due_by_size_or_age(tmp_path: Path):
    clock = Clock()
    batcher = records.RecordBatcher(
        LocalStore(tmp_path), "api", max_records=3, max_age_s=60, clock=clock
    )
    assert not batcher.due()
    batcher.add(_record(T0))
    assert not batcher.due()
    clock.now += 61
    assert batcher.due()
    batcher.flush()
    for _ in range(3):
        batcher.add(_record(T0))
    assert batcher.due()  # full before it is old
    assert batcher.flush() == 3 and batcher.written == 4 and not batcher.due()


def test_failed_write_is_counted_kept_and_not_retried_at_once(tmp_path: Path, caplog):
    clock = Clock()
    store = CountingStore(tmp_path)
    batcher = records.RecordBatcher(store, "api", max_records=2, max_age_s=30, clock=clock)
    for _ in range(3):
        batcher.add(_record(T0))
    store.fail = True
    assert batcher.flush() == 0
    assert batcher.failures == 1 and len(batcher) == 3 and batcher.dropped == 0
    assert "cannot write 3 prediction records" in caplog.text
    assert not batcher.due()  # waits out max_age_s before the next attempt
    clock.now += 31
    assert batcher.due()
    store.fail = False
    assert batcher.flush() == 3
    assert sum(1 for _ in records.read_records(store, since=T0, until=T0 + timedelta(1))) == 3


def test_failed_write_drops_and_counts_what_no_longer_fits(tmp_path: Path):
    store = CountingStore(tmp_path)
    batcher = records.RecordBatcher(store, "api", max_records=2, max_pending=2, clock=Clock())

    def busy_then_down(key: str, source: bytes | Path) -> bool:
        batcher.add(_record(T0))  # a record that arrives while the write is in flight
        raise RegistryError("the store is down")

    batcher.add(_record(T0))
    batcher.add(_record(T0))
    store.put_new = busy_then_down  # type: ignore[method-assign]
    assert batcher.flush() == 0
    assert len(batcher) == 2 and batcher.dropped == 1 and batcher.failures == 1


def test_batches_are_split_by_the_records_hour(tmp_path: Path):
    store = LocalStore(tmp_path)
    batcher = records.RecordBatcher(store, "api")
    batcher.add(_record(T0))
    batcher.add(_record(T0 + timedelta(hours=1)))
    batcher.flush()
    folders = sorted(k.rsplit("/", 1)[0] for k in store.list("records/"))
    assert folders == ["records/api/2026/03/04/10", "records/api/2026/03/04/11"]


def _write(store: RegistryStore, source: str, at: datetime, rows: list[dict], extra=b"") -> None:
    key = records.record_key(source, at, records.new_batch_id(at))
    assert store.put_new(key, records.dumps(rows) + extra)


def test_reader_lists_only_the_windows_hours_and_skips_torn_lines(tmp_path: Path, caplog):
    store = CountingStore(tmp_path)
    days_ago = T0 - timedelta(days=30)
    _write(store, "api", days_ago, [_record(days_ago)])
    _write(store, "api", T0, [_record(T0), _record(T0, "v2")], extra=b'{"at": "2026-03-0')
    _write(store, "bin-7", T0 + timedelta(hours=1), [_record(T0 + timedelta(hours=1))])
    stats = records.ReadStats()
    got = list(
        records.read_records(store, since=T0, until=T0 + timedelta(minutes=105), stats=stats)
    )
    assert len(got) == 3 and stats.torn == 1 and stats.objects == 2
    assert "skipped 1 unreadable record lines" in caplog.text
    hours = [p for p in store.listed if p.count("/") == 6]
    assert hours == [
        "records/api/2026/03/04/10/",
        "records/api/2026/03/04/11/",
        "records/bin-7/2026/03/04/10/",
        "records/bin-7/2026/03/04/11/",
    ]
    assert not any("2026/02" in p for p in store.listed)
    only = records.read_records(
        store, since=T0 - timedelta(minutes=5), until=T0 + timedelta(hours=5),
        source="api", model_version="v2",
    )  # fmt: skip
    assert [r["model_version"] for r in only] == ["v2"]
    # `until` is exclusive, `since` inclusive, by the record's own time
    assert not list(records.read_records(store, since=T0 + timedelta(seconds=1), source="api",
                                         until=T0 + timedelta(minutes=30)))  # fmt: skip


def test_round_trip_on_s3_finds_every_source_without_walking_them():
    with moto_bucket("records-test") as client:
        store = S3Store("s3://records-test/fleet", client=client)
        for source in ("api", "bin-7", "bin-7-b", "bin7"):
            batcher = records.RecordBatcher(store, source)
            for minutes in (0, 50, 70):
                batcher.add(_record(T0 + timedelta(minutes=minutes), source=source))
            assert batcher.flush() == 3
        assert records.sources(store) == ["api", "bin-7", "bin-7-b", "bin7"]
        window = list(records.read_records(store, since=T0, until=T0 + timedelta(minutes=60)))
        assert len(window) == 8
        assert {r["source"] for r in window} == {"api", "bin-7", "bin-7-b", "bin7"}
        one = list(records.read_records(store, since=T0, source="bin-7"))
        assert len(one) == 3 and json.loads(json.dumps(one[0])) == one[0]
        assert one[0]["embedding"] == [0.25] * 32


class SlowStore(LocalStore):
    """A store whose reads take a while and count how many run at once."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.gets = 0

    def get(self, key: str) -> bytes:
        with self.lock:
            self.running += 1
            self.gets += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        try:
            return super().get(key)
        finally:
            with self.lock:
                self.running -= 1


def _many_objects(store: RegistryStore) -> None:
    for i in range(24):
        at = T0 + timedelta(minutes=5 * i)
        _write(store, "api" if i % 3 else "bin-7", at, [_record(at, f"v{i}")])


def test_reader_fetches_objects_on_a_bounded_pool_in_the_same_order(tmp_path: Path):
    store = SlowStore(tmp_path)
    _many_objects(store)
    until = T0 + timedelta(hours=3)
    one = [r["model_version"] for r in records.read_records(store, since=T0, until=until)]
    assert store.most == 1 and len(one) == 24
    store.most = 0
    many = [
        r["model_version"] for r in records.read_records(store, since=T0, until=until, threads=4)
    ]
    assert many == one  # oldest hour first, each source's objects in key order
    assert 1 < store.most <= 4


def test_reader_stops_when_asked_and_says_the_window_is_partial(tmp_path: Path):
    store = SlowStore(tmp_path)
    _many_objects(store)
    stats = records.ReadStats()
    asked = itertools.count()
    got = list(
        records.read_records(
            store,
            since=T0,
            until=T0 + timedelta(hours=3),
            stats=stats,
            threads=4,
            stop=lambda: next(asked) >= 6,  # asked once before each object is fetched
        )
    )
    assert stats.partial and stats.objects == 6 == len(got) == store.gets
    whole = records.ReadStats()
    assert len(list(records.read_records(store, since=T0, stats=whole, stop=lambda: False))) == 24
    assert not whole.partial


# --- `wastesort drift --current` on records ------------------------------------------------------


def _darkened_records(clf: Classifier, source: str) -> list[dict[str, Any]]:
    out = []
    for path in ALL_SAMPLES:
        with Image.open(path) as image:
            dark = ImageEnhance.Brightness(image.convert("RGB")).enhance(0.4)
        prediction = clf.predict_image(dark)
        out.append(records.make_record(prediction, source=source, at=datetime.now(UTC)))
    return out


def test_drift_cli_judges_a_records_prefix_without_classifying_again(
    referenced_registry: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    clf = Classifier.load(referenced_registry, cache_dir=tmp_path / "cache")
    lake = tmp_path / "lake"
    for source, rows in (
        ("api", [
            records.make_record(clf.predict(p.read_bytes()), source="api", at=datetime.now(UTC))
            for p in ALL_SAMPLES
        ]),
        ("bin-9", _darkened_records(clf, "bin-9")),
    ):  # fmt: skip
        batcher = records.RecordBatcher(LocalStore(lake), source)
        for row in rows:
            batcher.add(row)
        batcher.flush()
    args = ["drift", "--model", str(referenced_registry), "--json", "--current"]
    assert main([*args, str(lake / "records"), "--source", "api", "--since", "1h"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["n"] == len(ALL_SAMPLES) and same["verdict"] == "ok"
    assert same["tests"]["embedding_mmd"]["verdict"] == "ok"
    assert main([*args, str(lake), "--source", "bin-9"]) == 0  # the store root works too
    moved = json.loads(capsys.readouterr().out)
    assert moved["verdict"] == "drift" and moved["tests"]["image_stats"]["verdict"] == "drift"
    assert main([*args, str(lake)]) == 0  # every source
    assert json.loads(capsys.readouterr().out)["n"] == 2 * len(ALL_SAMPLES)


def test_drift_cli_on_records_says_what_is_wrong_with_exit_2(
    referenced_registry: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    store = LocalStore(tmp_path / "lake")
    _write(store, "api", datetime.now(UTC), [_record(datetime.now(UTC), version="v9")])
    args = ["drift", "--model", str(referenced_registry), "--current", str(tmp_path / "lake")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no records of tiny-2" in err and "(it holds v9)" in err
    assert main([*args, "--since", "yesterday-ish"]) == 2
    assert "is not a time" in capsys.readouterr().err
    assert main([*args, "--since", "99999999d"]) == 2  # before year 1: no OverflowError
    assert "'99999999d' is not a time" in capsys.readouterr().err
    assert main([*args, "--until", "3d"]) == 2  # a window with nothing in it
    assert "no records of tiny-2" in capsys.readouterr().err
