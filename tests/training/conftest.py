"""Fixtures for the training tests: small synthetic image folders, built on the fly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"


def jpeg(seed: int, size: tuple[int, int] = (48, 64), colour: int | None = None) -> bytes:
    """A small, distinct JPEG: noise around a per-class colour."""
    rng = np.random.default_rng(seed)
    base = np.full((size[1], size[0], 3), colour if colour is not None else 128, np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_folder(root: Path, per_class: dict[str, int], *, seed: int = 0) -> Path:
    for c, (label, count) in enumerate(per_class.items()):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / f"{label}{i}.jpg").write_bytes(jpeg(seed * 1000 + c * 100 + i, colour=40 * c))
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes, 20 images each."""
    return make_folder(tmp_path / "data", {"glass": 20, "metal": 20, "paper": 20})
