"""Shared fixtures: a tiny TFLite model built by TensorFlow in a subprocess (so the test
process itself never imports TensorFlow), local registries holding it, and sample images."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from wastesort.manifest import InputSpec, OutputSpec
from wastesort.registry import GoldenSample, Registry

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny_int8.tflite (uint8 in, int8 logits, dynamic batch) and
    tiny_float.tflite (float32, batch 1), 48x64 input, 6 classes, random weights."""
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tiny_model.py"), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_int8(tiny_models: Path) -> Path:
    return tiny_models / "tiny_int8.tflite"


def tiny_fields(**overrides: object) -> dict:
    """Manifest fields that describe the tiny model."""
    fields = {
        "labels": LABELS,
        "input": InputSpec(height=48, width=64, dtype="uint8"),
        "output": OutputSpec(kind="logits", dtype="int8"),
        "metrics": {"accuracy": 0.5},
        "temperature": 1.0,
        "uncertain_threshold": 0.0,
    }
    fields.update(overrides)
    return fields


def sample_bytes(name: str = "glass") -> bytes:
    return next(iter(sorted((SAMPLES / name).glob("*.jpg")))).read_bytes()


@pytest.fixture
def registry_dir(tmp_path: Path, tiny_int8: Path) -> Path:
    """A local registry with version `tiny-1` behind `production` and a one-image golden set."""
    root = tmp_path / "registry"
    registry = Registry.from_uri(root, cache_dir=tmp_path / "cache")
    registry.publish(
        tiny_int8,
        version="tiny-1",
        golden=[GoldenSample("glass.jpg", sample_bytes("glass"), "glass")],
        aliases=["production"],
        **tiny_fields(),
    )
    return root


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@contextmanager
def moto_bucket(bucket: str, *, versioned: bool = False) -> Iterator[Any]:
    """An S3 client whose AWS is moto's, in this process, with `bucket` made (eu-west-1);
    versioned like the CDK app's buckets when asked."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        if versioned:
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        yield client
