"""Foreground masks on white-background photos, and compositing onto other floors.

The synthetic photos are what defeated brightness masks: a white-ish object and a clear one
(only an outline and a highlight) on a white sheet whose light falls off across it, each with a
soft shadow beside it, and a coloured object for contrast. All go through JPEG.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from training import composite, composite_sheet
from training.config import CompositeConfig, ConfigError, load_config

H, W = 192, 256


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def scene(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, the object's pixels, the shadow's pixels off the object)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    sheet = 232 + 10 * (xx / W) - 6 * (yy / H)  # the light falls off across the sheet
    img = np.repeat(sheet[..., None], 3, axis=2).astype(np.float32)
    img[..., 2] += 3  # a slightly cool sheet
    obj = _ellipse(96, 120, 50, 40) if kind != "empty" else np.zeros((H, W), bool)
    shadow = ndimage.gaussian_filter(_ellipse(112, 150, 50, 40).astype(np.float32), 8)
    img *= (1 - 0.35 * shadow)[..., None]
    inside = ndimage.gaussian_filter(obj.astype(np.float32), 0.7)[..., None]
    if kind == "white":
        img = img * (1 - inside) + inside * np.array([247.0, 246.0, 240.0])
    elif kind == "colour":
        img = img * (1 - inside) + inside * np.array([200.0, 60.0, 50.0])
    elif kind == "clear":  # what is behind shows through: an outline, a highlight
        ring = obj & ~_ellipse(96, 120, 46, 36)
        img[ring] *= 0.78
        img[_ellipse(80, 105, 25, 5)] = 255
    img += rng.normal(0, 2, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    photo = np.asarray(Image.open(buf).convert("RGB"))
    near = ndimage.binary_dilation(obj, iterations=3)
    return photo, obj, (shadow > 0.5) & ~near


@pytest.mark.parametrize("kind", ["white", "clear", "colour"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_mask_covers_the_object_and_not_the_sheet_or_the_shadow(kind: str, seed: int):
    photo, obj, shadow = scene(kind, seed)
    mask = composite.foreground_mask(photo)
    iou = (mask & obj).sum() / (mask | obj).sum()
    assert iou >= 0.85, f"{kind}: IoU {iou:.3f}"
    assert (mask & ~obj).sum() / (~obj).sum() <= 0.03  # the sheet stays out
    assert (mask & shadow).sum() / shadow.sum() <= 0.1  # and so does the soft shadow
    assert composite.trusted(mask, CompositeConfig())


def test_a_sheet_with_only_a_shadow_is_not_trusted():
    photo, _, _ = scene("empty")
    mask = composite.foreground_mask(photo)
    assert mask.mean() < 0.03
    assert not composite.trusted(mask, CompositeConfig())
    assert composite.composites(photo, CompositeConfig(enabled=True), seed=0) == []


def test_a_big_photo_is_masked_at_work_size_and_scaled_back():
    photo, obj, _ = scene("colour")
    big = np.asarray(Image.fromarray(photo).resize((W * 3, H * 3), Image.Resampling.BILINEAR))
    mask = composite.foreground_mask(big)
    assert mask.shape == big.shape[:2]
    small = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((W, H))) > 0
    assert (small & obj).sum() / (small | obj).sum() >= 0.85


def test_composites_keep_the_object_and_change_the_floor(tmp_path: Path):
    photo, obj, _ = scene("colour")
    cfg = CompositeConfig(enabled=True, per_photo=2)
    made = composite.composites(photo, cfg, seed=3)
    assert len(made) == 2
    core = ndimage.binary_erosion(obj, iterations=6)
    far = ~ndimage.binary_dilation(obj, iterations=12)
    for out in made:
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert np.abs(out[core].astype(int) - photo[core]).mean() < 3  # the object, as it was
        assert np.abs(out[far].astype(int) - photo[far]).mean() > 20  # another floor
    assert not np.array_equal(made[0], made[1])
    again = composite.composites(photo, cfg, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(made, again, strict=True))


def test_floor_photos_are_cropped_for_backgrounds(tmp_path: Path):
    floors = tmp_path / "floors"
    floors.mkdir()
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 60, (300, 400, 3), dtype=np.uint8)  # a dark floor
    Image.fromarray(tiles).save(floors / "floor.jpg")
    photo, obj, _ = scene("white")
    cfg = CompositeConfig(enabled=True, backgrounds=floors, procedural=False)
    (out,) = composite.composites(photo, cfg, seed=0)
    far = ~ndimage.binary_dilation(obj, iterations=12)
    assert out[far].mean() < 60  # the floor photo's, not a texture's or the sheet's


def test_composites_are_cached_per_photo(tmp_path: Path):
    photo, _, _ = scene("colour")
    cfg = CompositeConfig(enabled=True)
    first = composite.cached_composites(photo, "ab" * 32, cfg, seed=1, cache_dir=tmp_path)
    (saved,) = (tmp_path / "composite").glob("*.npz")
    again = composite.cached_composites(photo * 0, "ab" * 32, cfg, seed=1, cache_dir=tmp_path)
    assert np.array_equal(first[0], again[0])  # read back, not made again from the photo
    empty, _, _ = scene("empty")
    assert composite.cached_composites(empty, "cd" * 32, cfg, seed=1, cache_dir=tmp_path) == []
    assert len(list((tmp_path / "composite").glob("*.npz"))) == 2
    assert saved.exists()


def test_training_gets_the_composites_with_their_photos_labels(tmp_path: Path):
    photos = np.stack([scene("colour")[0], scene("empty")[0], scene("white")[0]])
    labels = ["glass", "paper", "plastic"]
    items = [SimpleNamespace(sha256=f"{i:064x}", label=labels[c]) for i, c in enumerate((2, 0, 1))]
    ds = SimpleNamespace(items=items, labels=labels)
    y, w = np.array([2, 0, 1]), np.array([1.0, 2.0, 3.0])
    off = load_config(None)
    assert composite.for_training(off, ds, photos, train=[0, 1, 2], y=y, weights=w)[0] is photos
    on = load_config(None, ["composite.enabled=true", f"cache_dir={tmp_path}"])
    pixels, train, y2, w2 = composite.for_training(on, ds, photos, train=[0, 1, 2], y=y, weights=w)
    assert pixels.shape[0] == 5 and train == [0, 1, 2, 3, 4]  # the empty sheet is left alone
    assert y2.tolist() == [2, 0, 1, 2, 1] and w2.tolist() == [1.0, 2.0, 3.0, 1.0, 3.0]
    _, _, _, none = composite.for_training(on, ds, photos, train=[0, 1, 2], y=y, weights=None)
    assert none is None
    paper = load_config(
        None, ["composite.enabled=true", "composite.classes=[paper]", f"cache_dir={tmp_path}"]
    )
    pixels, train, y3, w3 = composite.for_training(
        paper, ds, photos, train=[0, 1, 2], y=y, weights=w
    )
    assert train == [0, 1, 2, 3] and y3.tolist() == [2, 0, 1, 1] and w3.tolist()[-1] == 3.0
    assert pixels[3][96, 120].mean() > 235  # the white object, composited
    bad = load_config(None, ["composite.enabled=true", "composite.classes=[food]"])
    with pytest.raises(ConfigError, match="food"):
        composite.for_training(bad, ds, photos, train=[0, 1, 2], y=y, weights=w)


def test_the_contact_sheet_and_its_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = tmp_path / "photos"
    folder.mkdir()
    for kind in ("white", "clear", "colour", "empty"):
        Image.fromarray(scene(kind)[0]).save(folder / f"{kind}.jpg")
    sheet = tmp_path / "masks.png"
    assert composite_sheet.main([str(folder), "--sheet", str(sheet)]) == 0
    assert "4 masks" in capsys.readouterr().out
    with Image.open(sheet) as image:
        assert image.width > 4 * 100
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert composite_sheet.main([str(folder), "--sheet", str(sheet)]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert composite_sheet.main([str(tmp_path / "nowhere"), "--sheet", str(sheet)]) == 2


def test_the_section_is_validated(tmp_path: Path):
    assert not load_config(None).composite.enabled
    with pytest.raises(ConfigError, match="backgrounds"):
        load_config(None, [f"composite.backgrounds={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="min_cover"):
        load_config(None, ["composite.min_cover=0.9", "composite.max_cover=0.5"])
    with pytest.raises(ConfigError, match="nothing to paste on"):
        load_config(None, ["composite.enabled=true", "composite.procedural=false"])
    with pytest.raises(ConfigError, match="pretrained"):
        load_config("training/configs/tiny.yaml", ["composite.enabled=true"])
    with pytest.raises(ConfigError, match="per_photo"):
        load_config(None, ["composite.per_photo=3"])


@pytest.mark.slow
def test_a_run_with_compositing_trains_on_the_composites(tmp_path: Path, caplog):
    from training.data import load_dataset
    from training.train import train

    for c, kind in enumerate(("white", "colour", "clear")):
        folder = tmp_path / "data" / kind
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(scene(kind, seed=10 * c + i)[0]).save(folder / f"{kind}{i}.jpg")
    cfg = load_config(
        None,
        [
            f"data.dir={tmp_path / 'data'}",
            "input.height=96",
            "input.width=128",
            f"cache_dir={tmp_path / 'cache'}",
            "augment.views=1",
            "train.head.epochs=1",
            "composite.enabled=true",
        ],
    )
    ds, pixels = load_dataset(cfg)
    with caplog.at_level("INFO", logger="training.composite"):
        trained = train(cfg, ds, pixels)
    assert trained.epochs and trained.epochs[0]["phase"] == "head"
    counts = next(r.args for r in caplog.records if r.msg.startswith("composites"))
    assert counts["composited"] == len(ds.indices("train")) == counts["added"]
    assert len(list((tmp_path / "cache" / "composite").glob("*.npz"))) == counts["composited"]
