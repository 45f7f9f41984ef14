"""Foreground masks and background compositing: the same object on other floors.

A model trained on photos taken on one white sheet can learn the sheet. Cutting the object out
and pasting it onto floor crops or procedural textures takes that shortcut away, but only where
the mask is right, and brightness masks fail exactly where the model fails: clear glass and
plastic, white paper on the white sheet. So the mask here does not threshold brightness. It
models the background from the photo's border (colour, and its light as a smooth field) and
marks what differs from it: chroma, saturation, a much darker or brighter tone than the light
there, and local contrast (a band-pass of the luminance, which sees the outline and highlights
of a clear bottle or the edge of a sheet of paper but not the slow ramp of a soft shadow);
morphology closes the outline and fills it. A mask that covers too little or too much of the
photo (most cardboard fills the frame) is not trusted and the photo is left alone.

Off by default (`composite.enabled`); `python -m training.composite_sheet --sheet masks.png
DIR...` draws the masks on a contact sheet, to check before turning it on."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from training.overrides import ConfigError
from wastesort.preprocess import IMAGE_SUFFIXES, load_image

if TYPE_CHECKING:
    from training.config import CompositeConfig, Config
    from training.data import Dataset

log = logging.getLogger(__name__)

WORK_SIDE = 256
"""Masks are computed with the long side at most this many pixels, then scaled back."""


@dataclass(frozen=True)
class MaskSettings:
    """How far from the border's model a pixel must be to count as the object."""

    border: float = 0.06
    """Width of the band the background is modelled from, as a fraction of the short side."""
    chroma_z: float = 6.0
    """Robust z-score of the colour difference from the border."""
    saturation: float = 0.25
    dark: float = 0.55
    """Luminance below this fraction of the background light there (a shadow is lighter)."""
    bright: float = 1.3
    contrast_z: float = 6.0
    """Robust z-score of the band-pass (local contrast) over the border's noise."""
    contrast_floor: float = 0.004
    close: float = 0.03
    """Radius of the closing that joins an outline, as a fraction of the short side."""
    min_part: float = 0.004
    """Parts smaller than this share of the image are dropped."""


def _border(shape: tuple[int, int], width: int) -> np.ndarray:
    band = np.zeros(shape, bool)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    return band


def _robust(values: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Median and scaled MAD along axis 0, the scale floored: the border's typical value and
    noise, unmoved by the odd object pixel that reaches the border."""
    med = np.median(values, axis=0)
    mad = 1.4826 * np.median(np.abs(values - med), axis=0)
    return med, np.maximum(mad, floor)


def _light_field(lum: np.ndarray, band: np.ndarray) -> np.ndarray:
    """The background's light as a quadratic surface fit to the border's luminance (twice,
    dropping the border pixels the first fit explains worst), so vignetting and a light
    gradient across the sheet are not taken for the object."""
    h, w = lum.shape
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx / w - 0.5, yy / h - 0.5
    design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)
    a, b = design[band], lum[band]
    keep = np.ones(len(b), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
        resid = np.abs(b - a @ coef)
        keep = resid <= np.quantile(resid, 0.8)
    return np.maximum(design @ coef, 1e-3)


def _disk(radius: int) -> np.ndarray:
    r = max(1, radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def foreground_mask(rgb: np.ndarray, settings: MaskSettings | None = None) -> np.ndarray:
    """The object's pixels in an RGB photo (H, W, 3, uint8) of one object on a background.

    Returns:
        A bool array (H, W): True on the object.
    """
    s = settings or MaskSettings()
    full_h, full_w = rgb.shape[:2]
    factor = min(1.0, WORK_SIDE / max(full_h, full_w))
    img = Image.fromarray(np.asarray(rgb, np.uint8))
    if factor < 1:
        size = (max(8, round(full_w * factor)), max(8, round(full_h * factor)))
        img = img.resize(size, Image.Resampling.BOX)
    x = np.asarray(img, np.float32) / 255.0
    h, w = x.shape[:2]
    band = _border((h, w), max(2, round(s.border * min(h, w))))

    lum = x.mean(axis=-1)
    chroma = np.stack([x[..., 0] - x[..., 1], (x[..., 0] + x[..., 1]) / 2 - x[..., 2]], -1)
    sat = (x.max(-1) - x.min(-1)) / np.maximum(x.max(-1), 1e-3)
    c_med, c_scale = _robust(chroma[band], 0.01)
    chroma_z = np.sqrt((((chroma - c_med) / c_scale) ** 2).sum(-1))
    s_med, _ = _robust(sat[band], 0.01)
    ratio = lum / _light_field(lum, band)
    # Local contrast: a difference of Gaussians is ~0 on a linear ramp (a soft shadow, the
    # light falling off) and large on a step or a highlight (an edge of paper, a clear bottle).
    dog = np.abs(ndimage.gaussian_filter(lum, 1.0) - ndimage.gaussian_filter(lum, 2.0))
    d_med, d_scale = _robust(dog[band], 1e-4)
    contrast = dog > max(d_med + s.contrast_z * d_scale, s.contrast_floor)

    seed = (
        (chroma_z > s.chroma_z)
        | (sat - s_med > s.saturation)
        | (ratio < s.dark)
        | (ratio > s.bright)
        | contrast
    )
    radius = round(s.close * min(h, w))
    mask = ndimage.binary_closing(seed, _disk(radius), border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    mask = ndimage.binary_opening(mask, _disk(max(1, radius // 3)))
    # The band-pass answers on both sides of an edge: take back the outer half.
    mask = ndimage.binary_erosion(mask, _disk(2))
    labels, count = ndimage.label(mask)
    if count:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        keep = np.flatnonzero(sizes >= s.min_part * h * w) + 1
        mask = np.isin(labels, keep)
    if (h, w) != (full_h, full_w):
        big = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (full_w, full_h), Image.Resampling.BILINEAR
        )
        mask = np.asarray(big) >= 128
    return mask


def trusted(mask: np.ndarray, cfg: CompositeConfig) -> bool:
    """Whether a mask looks like one object: neither a speck nor the whole frame."""
    return cfg.min_cover <= float(mask.mean()) <= cfg.max_cover


def _noise(shape: tuple[int, int], scale: int, amp: float, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    coarse = rng.normal(0, amp, (max(2, h // scale), max(2, w // scale))).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BILINEAR))


def procedural(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A floor-like texture (H, W, 3 uint8): speckled concrete, planks or tiles in a random
    colour, so the model meets backgrounds it cannot memorise."""
    h, w = shape
    base = rng.uniform(50, 200) + rng.uniform(-25, 25, 3)  # muted, as floors are
    kind = rng.integers(3)
    if kind == 0:  # concrete / asphalt: noise at several scales
        tone = sum(_noise((h, w), scale, amp, rng) for scale, amp in ((32, 30), (8, 15), (1, 10)))
    elif kind == 1:  # planks: stripes with grain, each plank its own shade
        width = rng.integers(h // 6 + 4, h // 3 + 8)
        grain = np.sin(np.arange(w)[None, :] / rng.uniform(3, 9) + rng.normal(0, 0.3, (h, 1)))
        shade = rng.normal(0, 15, (h // width + 1, 1))[np.arange(h) // width]
        tone = 12 * grain - 40.0 * (np.arange(h)[:, None] % width < 2) + shade
    else:  # tiles: a grid with grout lines
        size = rng.integers(min(h, w) // 5 + 4, min(h, w) // 2 + 8)
        yy, xx = np.mgrid[0:h, 0:w]
        grout = (yy % size < 3) | (xx % size < 3)
        tone = np.where(grout, -50.0, 0.0) + rng.normal(0, 4, (h, w))
    pixels = base[None, None, :] + np.asarray(tone, np.float32)[..., None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def floor_crop(path: Path, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of a floor photo, resized to `shape` (H, W)."""
    image = load_image(path.read_bytes())
    h, w = shape
    scale = rng.uniform(0.5, 1.0)
    cw = max(1, min(image.width, round(image.width * scale)))
    ch = max(1, min(image.height, round(cw * h / w)))
    left = int(rng.integers(0, image.width - cw + 1))
    top = int(rng.integers(0, image.height - ch + 1))
    crop = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(crop, np.uint8)


def paste(rgb: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The object over `background`, its edge feathered by a pixel or two."""
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)[..., None]
    out = alpha * rgb.astype(np.float32) + (1 - alpha) * background.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def backgrounds(folder: Path | None) -> list[Path]:
    return [] if folder is None else image_files(folder)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def composites(
    rgb: np.ndarray,
    cfg: CompositeConfig,
    *,
    seed: int,
    floors: Sequence[Path] | None = None,
    mask: np.ndarray | None = None,
) -> list[np.ndarray]:
    """`cfg.per_photo` composites of one photo, or none when its mask is not trusted. Each
    background is a floor crop or a procedural texture, by a coin per composite when both
    are allowed (`floors`: the floor photos, default those in `cfg.backgrounds`)."""
    mask = foreground_mask(rgb) if mask is None else mask
    if not trusted(mask, cfg):
        return []
    rng = np.random.default_rng(seed)
    floors = backgrounds(cfg.backgrounds) if floors is None else floors
    out = []
    for _ in range(cfg.per_photo):
        use_floor = bool(floors) and (not cfg.procedural or rng.random() < 0.5)
        if use_floor:
            back = floor_crop(floors[int(rng.integers(len(floors)))], mask.shape, rng)
        else:
            back = procedural(mask.shape, rng)
        out.append(paste(rgb, mask, back))
    return out


def cache_key(sha256: str, cfg: CompositeConfig, seed: int, shape: tuple[int, ...]) -> str:
    """Names one photo's composites: its bytes, the settings, the seed, the input size."""
    text = json.dumps(
        [sha256, cfg.model_dump(mode="json"), seed, list(shape), MaskSettings().__dict__]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_composites(
    rgb: np.ndarray,
    sha256: str,
    cfg: CompositeConfig,
    *,
    seed: int,
    cache_dir: Path,
    floors: Sequence[Path] | None = None,
) -> list[np.ndarray]:
    """`composites`, kept on disk (`cache_dir/composite/<key>.npz`) so a rerun pays nothing;
    an untrusted mask is cached too, as no composites."""
    path = Path(cache_dir) / "composite" / f"{cache_key(sha256, cfg, seed, rgb.shape)}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return list(saved["composites"])
    made = composites(rgb, cfg, seed=seed, floors=floors)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack(made) if made else np.zeros((0, *rgb.shape), np.uint8)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, composites=stack)
    tmp.replace(path)
    return made


def extend(
    pixels: np.ndarray,
    shas: Sequence[str],
    cfg: CompositeConfig,
    *,
    seed: int,
    cache_dir: Path,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The composites of some training photos.

    Returns:
        (composites (M, H, W, 3), the photo each came from (M,), counts for the run's log:
        photos composited, photos left alone because their mask is not trusted, composites).
    """
    floors = backgrounds(cfg.backgrounds)
    made, source = [], []
    for i, (rgb, sha) in enumerate(zip(pixels, shas, strict=True)):
        out = cached_composites(rgb, sha, cfg, seed=seed + i, cache_dir=cache_dir, floors=floors)
        made += out
        source += [i] * len(out)
    used = len(set(source))
    counts = {"composited": used, "left_alone": len(pixels) - used, "added": len(made)}
    stack = np.stack(made) if made else np.zeros((0, *pixels.shape[1:]), np.uint8)
    return stack.astype(pixels.dtype), np.asarray(source, np.int64), counts


def for_training(
    cfg: Config,
    ds: Dataset,
    pixels: np.ndarray,
    *,
    train: list[int],
    y: np.ndarray,
    weights: np.ndarray | None,
) -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray | None]:
    """The training split with composites of its photos (of `composite.classes`) appended,
    each with its photo's label and weight: (pixels, train indices, labels, weights).

    Raises:
        ConfigError: `composite.classes` names a class the data does not have.
    """
    if not cfg.composite.enabled:
        return pixels, train, y, weights
    only = set(cfg.composite.classes or ds.labels)
    if only - set(ds.labels):
        raise ConfigError(f"composite.classes: {sorted(only - set(ds.labels))} are no classes")
    chosen = np.array([k for k, i in enumerate(train) if ds.items[i].label in only], np.int64)
    picked = [train[k] for k in chosen]
    added, source, counts = extend(
        pixels[picked],
        [ds.items[i].sha256 for i in picked],
        cfg.composite,
        seed=cfg.train.seed,
        cache_dir=Path(cfg.cache_dir),
    )
    log.info("composites: %s", counts)
    source = chosen[source]  # positions in the training split
    indices = train + list(range(len(pixels), len(pixels) + len(added)))
    w = None if weights is None else np.concatenate([weights, weights[source]])
    return np.concatenate([pixels, added]), indices, np.concatenate([y, y[source]]), w
