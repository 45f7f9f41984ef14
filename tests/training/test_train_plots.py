"""The hardest mistakes sheet is drawn by the core's contact sheet (one owner for sheets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.plots import mistakes_png
from wastesort import contact_sheet


def test_mistakes_png_lists_the_most_confident_errors_on_a_contact_sheet(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 48, 64, 3), dtype=np.uint8)
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), [0, 1, 2, 0, 1, 2]] = [0.8, 0.8, 0.7, 0.6, 0.5, 0.8]
    y_true = np.array([0, 1, 0, 1, 2, 2])  # rows 2, 3 and 4 are wrong
    path, listed = mistakes_png(
        images=images,
        probs=probs,
        y_true=y_true,
        labels=["a", "b", "c"],
        names=[f"p{i}.jpg" for i in range(6)],
        path=tmp_path / "mistakes.png",
    )
    assert [m["path"] for m in listed] == ["p2.jpg", "p3.jpg", "p4.jpg"]  # most confident first
    with Image.open(path) as image:
        assert image.size == contact_sheet.size(3, lines=2)
