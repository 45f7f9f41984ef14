"""Choosing and verifying the build that runs (wastesort.artifacts), and the decode steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from tests.conftest import sample_bytes, tiny_fields
from wastesort import Classifier, artifacts
from wastesort.errors import IntegrityError, SignatureError
from wastesort.registry import Registry
from wastesort.signing import generate_keypair
from wastesort.validation import explain, field_errors


@pytest.fixture
def registry(tmp_path: Path, tiny_int8: Path) -> Registry:
    """v1 with an Edge TPU build (the tiny model plus a byte), signed; v2 unsigned."""
    private, _ = generate_keypair()
    build = tmp_path / "model_edgetpu.tflite"
    build.write_bytes(tiny_int8.read_bytes() + b"\0")
    reg = Registry.from_uri(tmp_path / "reg", cache_dir=tmp_path / "cache")
    reg.publish(
        tiny_int8,
        version="v1",
        extra_files={"edgetpu": build},
        signing_key=private,
        aliases=["production"],
        **tiny_fields(),
    )
    reg.publish(tiny_int8, version="v2", **tiny_fields())
    return reg


def test_the_cpu_build_unless_an_edge_tpu_is_asked_for_and_answers(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entry = registry.resolve("v1")
    assert artifacts.choose(entry).variant is None
    assert artifacts.choose(entry).ref == entry.artifact
    monkeypatch.setattr(artifacts, "load_edgetpu_delegate", lambda: None)
    assert artifacts.choose(entry, delegate="edgetpu").variant is None
    assert "no Edge TPU device" in caplog.text
    monkeypatch.setattr(artifacts, "load_edgetpu_delegate", object)
    chosen = artifacts.choose(entry, delegate="edgetpu")
    assert (chosen.variant, chosen.delegate) == ("edgetpu", "edgetpu")
    assert chosen.ref == entry.extra_artifacts["edgetpu"]
    assert artifacts.choose(registry.resolve("v2"), delegate="edgetpu").variant is None
    assert "v2 has no Edge TPU build" in caplog.text


def test_a_key_demands_a_valid_signature(registry: Registry) -> None:
    _, stranger = generate_keypair()
    with pytest.raises(SignatureError, match="does not match"):
        artifacts.choose(registry.resolve("v1"), public_key=stranger)
    with pytest.raises(SignatureError, match="not signed"):
        artifacts.choose(registry.resolve("v2"), public_key=stranger)
    artifacts.choose(registry.resolve("v2"))  # no key, nothing checked


def test_bytes_from_elsewhere_are_verified_against_the_choice(registry: Registry) -> None:
    choice = artifacts.choose(registry.resolve("v1"))
    content = artifacts.fetch(registry, choice)
    artifacts.verify_content(content, choice)
    with pytest.raises(IntegrityError, match="sha256"):
        artifacts.verify_content(content[:-1] + b"x", choice)
    with pytest.raises(IntegrityError, match="truncated"):
        artifacts.verify_content(content[:-1], choice)


def test_decode_then_predict_image_is_predict(registry: Registry, tmp_path: Path) -> None:
    clf = Classifier.load(registry.uri, cache_dir=tmp_path / "c2")
    data = sample_bytes("paper")
    image = clf.decode(data)
    assert image.mode == "RGB"
    assert np.array_equal(clf.to_array(image), clf.preprocess(data))
    assert clf.predict_image(image) == clf.predict(data)
    assert clf.warm_up() >= 0


def test_one_message_for_every_pydantic_error() -> None:
    class Config(BaseModel, extra="forbid"):
        port: int
        name: str = "x"

    with pytest.raises(ValidationError) as caught:
        Config.model_validate({"port": "eighty", "colour": 1})
    assert field_errors(caught.value) == [
        "port: Input should be a valid integer, unable to parse string as an integer "
        "(got 'eighty')",
        "colour: unknown key",
    ]
    assert explain(caught.value, heading="bad", with_input=False).splitlines() == [
        "bad:",
        "  port: Input should be a valid integer, unable to parse string as an integer",
        "  colour: unknown key",
    ]
