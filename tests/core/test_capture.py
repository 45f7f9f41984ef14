"""The capture store and the store operations it stands on: list, get, put_new (issue 35 §1-2),
on a folder and on S3 (moto), with the same rules on both."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import moto_bucket
from wastesort.capture import (
    CaptureStore,
    Sampler,
    UnknownCaptureError,
    key_of,
    new_id,
    parse_id,
    sanitize,
)
from wastesort.classifier import Prediction
from wastesort.errors import NotFoundError, NotSupportedError, RegistryError
from wastesort.registry.http import HttpStore
from wastesort.registry.local import LocalStore
from wastesort.registry.s3 import S3Store
from wastesort.registry.store import RegistryStore

BUCKET = "wastesort-test-captures"
NOW = datetime(2026, 12, 5, 10, 30, 0, tzinfo=UTC)


@pytest.fixture
def s3():
    with moto_bucket(BUCKET) as client:
        yield client


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path) -> RegistryStore:
    if request.param == "local":
        return LocalStore(tmp_path / "captures-root")
    return S3Store(f"s3://{BUCKET}/field", client=request.getfixturevalue("s3"))


def gps_jpeg(size: tuple[int, int] = (2400, 1800)) -> bytes:
    """A JPEG carrying EXIF with a GPS block (latitude 52°N), as phones write them."""
    image = Image.new("RGB", size, (120, 160, 90))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 1.0)})
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def prediction(decision: str = "glass") -> Prediction:
    return Prediction("glass", 0.4, {"glass": 0.4, "metal": 0.35, "paper": 0.25}, decision, "v1")


# --- the stores ---------------------------------------------------------------------------------


def test_put_new_is_write_once_for_bytes_and_files(store: RegistryStore, tmp_path: Path):
    assert store.put_new("a/b/one.json", b"first")
    assert not store.put_new("a/b/one.json", b"second")  # refused, left untouched
    assert store.get("a/b/one.json") == b"first"
    source = tmp_path / "file.bin"
    source.write_bytes(b"from a file")
    assert store.put_new("a/two.bin", source)
    assert not store.put_new("a/two.bin", source)
    assert store.get("a/two.bin") == b"from a file"


def test_get_of_a_missing_key_is_not_found(store: RegistryStore):
    with pytest.raises(NotFoundError):
        store.get("nothing/here.json")


def test_list_is_sorted_by_prefix_and_resumes_after_a_key(store: RegistryStore):
    keys = ["c/2026/12/05/b.json", "c/2026/12/05/a.json", "c/2026/12/06/a.json", "d/x.json"]
    for key in keys:
        store.put_new(key, b"{}")
    assert list(store.list("c/")) == sorted(keys[:3])
    assert list(store.list("c/2026/12/05/")) == ["c/2026/12/05/a.json", "c/2026/12/05/b.json"]
    assert list(store.list("c/", start_after="c/2026/12/05/b.json")) == ["c/2026/12/06/a.json"]
    assert list(store.list("c/20")) == sorted(keys[:3])  # a prefix need not end at a folder
    assert list(store.list("zzz/")) == []
    assert sorted(store.list()) == sorted(keys)


def test_an_http_store_says_what_it_cannot_do():
    store = HttpStore("https://models.example.com/registry")
    for call in (
        lambda: list(store.list("captures/")),
        lambda: store.get("captures/x.json"),
        lambda: store.put_new("captures/x.json", b"{}"),
    ):
        with pytest.raises(NotSupportedError, match="HTTP registry"):
            call()


def test_s3_put_new_maps_a_412_to_refused_and_other_failures_to_errors(s3):
    store = S3Store(f"s3://{BUCKET}/p", client=s3)
    assert store.put_new("k", b"1") and not store.put_new("k", b"2")
    missing = S3Store("s3://no-such-bucket-here/p", client=s3)
    with pytest.raises(RegistryError):
        missing.put_new("k", b"1")
    with pytest.raises(RegistryError):
        list(missing.list(""))


# --- ids, sampling, sanitizing ------------------------------------------------------------------


def test_a_capture_id_carries_its_time_and_source():
    capture_id = new_id("bin-0042", now=NOW)
    assert parse_id(capture_id) == (NOW, "bin-0042")
    assert key_of(capture_id) == f"captures/bin-0042/2026/12/05/{capture_id}"
    for bad in ("../../etc/passwd", "20261205T103000Z-abc-api", "", "x" * 20):
        with pytest.raises(UnknownCaptureError):
            parse_id(bad)


def test_sampler_keeps_every_uncertain_and_about_the_fraction_of_the_rest():
    sampler = Sampler(0.1, random.Random(35))
    assert all(sampler.reason("uncertain") == "uncertain" for _ in range(200))
    kept = sum(sampler.reason("glass") == "sampled" for _ in range(10_000))
    assert 900 <= kept <= 1100
    assert Sampler(0.0).reason("glass") is None


def test_sanitize_drops_gps_exif_and_caps_the_size():
    data = gps_jpeg()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the input has GPS
    clean = Image.open(io.BytesIO(sanitize(data)))
    assert not clean.getexif() and "exif" not in clean.info
    assert max(clean.size) == 1024 and clean.format == "JPEG"


# --- the capture store ----------------------------------------------------------------------


def test_save_record_image_and_labels_round_trip(store: RegistryStore):
    captures = CaptureStore(store)
    record = captures.save(gps_jpeg((400, 300)), prediction("uncertain"), reason="uncertain")
    assert record.source == "api" and record.reason == "uncertain"
    assert captures.record(record.id) == record
    image = captures.image(record.id)
    assert len(image) == record.bytes and not Image.open(io.BytesIO(image)).getexif()
    stored = json.loads(store.get(f"{key_of(record.id)}.json"))
    assert set(stored) == set(record.to_dict())  # no IP, no key: nothing but the record
    captures.add_label(record.id, "metal", by="caller", source="feedback", now=NOW)
    later = NOW.replace(minute=31)
    captures.add_label(record.id, "glass", by="alice", source="review", now=later)
    assert [e.label for e in captures.labels(record.id)] == ["metal", "glass"]
    assert list(captures.all_labels()) == [record.id]
    assert [c.id for c in captures.captures()] == [record.id]
    assert list(captures.captures(since=date(2999, 1, 1))) == []
    with pytest.raises(UnknownCaptureError):
        captures.record(new_id("api"))


def test_a_capture_id_is_written_once(store: RegistryStore):
    captures = CaptureStore(store)
    capture_id = new_id("api", now=NOW)
    captures.save(gps_jpeg((64, 48)), prediction(), reason="sampled", capture_id=capture_id)
    with pytest.raises(RegistryError, match="write-once"):
        captures.save(gps_jpeg((64, 48)), prediction(), reason="sampled", capture_id=capture_id)


def test_from_uri_picks_the_back_end(tmp_path: Path, s3):
    assert isinstance(CaptureStore.from_uri(str(tmp_path)).store, LocalStore)
    bounded = CaptureStore.from_uri(f"s3://{BUCKET}/c", timeout_s=0.5).store
    assert isinstance(bounded, S3Store)
    config = bounded.client.meta.config
    assert config.connect_timeout == 0.5 and config.retries["total_max_attempts"] == 1
