"""Image bytes -> the uint8 tensor the model takes. Defined here once for every consumer.

Training feeds the network arrays made by `preprocess`, the API and the edge runner call it
before every invoke, so the same JPEG yields the same tensor everywhere.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from contextlib import nullcontext

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wastesort.errors import (
    CorruptImageError,
    EmptyImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
)
from wastesort.manifest import InputSpec

DEFAULT_MAX_PIXELS = 40_000_000
"""Refuse images above this many pixels before decoding them (a 12 MP phone photo is fine)."""

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
"""What Pillow may open (the JPEG opener also reads MPO, the multi-picture JPEG of phones)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
"""File names taken for images when a folder is scanned (the CLI, the edge folder source)."""

FORMAT_MAX_PIXELS = {"WEBP": 16_000_000}
"""Formats whose decoder holds several full-size copies get a lower limit, from the memory
budget of about 300 MB per image (bench/serving's decode-memory table): Pillow decodes
WebP through ~15 bytes a pixel, where PNG and BMP take ~5 and a JPEG decodes at draft size."""

BIG_PIXELS = 4_000_000
"""Above this many pixels an image is decoded one at a time per slot and shrunk in strips."""

DECODE_SLOTS = int(os.environ.get("WASTESORT_DECODE_SLOTS", "2"))
"""Big images decoded at once in this process; more wait (each holds its full-size pixels)."""

_decode_slots = threading.BoundedSemaphore(max(1, DECODE_SLOTS))
_REDUCING_GAP = 3.0
_EXTENT = "wastesort.extent"
_STRIP_ROWS = 64
"""Output rows made per strip when shrinking a big image (bounds the strip's transient copy)."""

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_WHITE = (255, 255, 255)


def signature(data: bytes) -> str | None:
    """The format the first bytes announce (JPEG, PNG, WEBP, GIF, BMP), or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def load_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size=None
) -> Image.Image:
    """Decode image bytes into an upright RGB image.

    Memory stays near one copy of the decoded pixels: JPEGs decode at a reduced scale (draft),
    and other big images (over `BIG_PIXELS`) are converted and shrunk strip by strip to about
    `_REDUCING_GAP` times the target size, at most `DECODE_SLOTS` at once per process.

    Args:
        data: the encoded image (JPEG, PNG, WebP, BMP, or the first frame of a GIF).
        max_pixels: width x height above which the image is refused, checked from the header
            before any pixel is decoded.
        draft_size: (width, height) the caller will shrink to; lets the JPEG decoder decode at
            1/2, 1/4 or 1/8 scale instead of full size, and big images shrink while converting.

    Raises:
        EmptyImageError, UnsupportedFormatError, TooManyPixelsError, CorruptImageError. A
        truncated image is refused (CorruptImageError), never classified half-decoded.
    """
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    announced = signature(data)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at 2x errors) on its own bomb limit; ours is explicit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        if announced is not None:  # e.g. a PNG whose IHDR checksum is wrong
            raise CorruptImageError(f"the {announced} header is corrupt") from None
        raise UnsupportedFormatError(
            "not a supported image (JPEG, PNG, WebP, BMP or GIF expected)"
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own hard limit, far above ours
        found = re.search(r"\((\d+) pixels\)", str(exc))  # the size, in Pillow's words
        size = f"{int(found[1]):,}" if found else "too many"
        raise TooManyPixelsError(
            f"the image has {size} pixels; the limit is {max_pixels:,}"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"the image header cannot be read: {exc}") from None

    width, height = image.size
    limit = min(max_pixels, FORMAT_MAX_PIXELS.get(image.format or "", max_pixels))
    if width * height > limit:
        which = f"for {image.format} " if limit < max_pixels else ""
        raise TooManyPixelsError(
            f"the image has {width}x{height} = {width * height:,} pixels; "
            f"the limit {which}is {limit:,}"
        )
    if width < 1 or height < 1:
        raise CorruptImageError("the image has no pixels")
    if image.format in ("JPEG", "MPO") and len(data) * 512 < width * height:
        # Every 8x8 block takes at least one bit, so fewer bytes cannot hold this many
        # pixels: the header claims a size whose data is missing (libjpeg would pad it grey).
        raise CorruptImageError(
            f"the JPEG is truncated: {len(data):,} bytes cannot hold {width}x{height} pixels"
        )

    big = width * height > BIG_PIXELS
    try:
        with _decode_slots if big else nullcontext():
            if draft_size and image.format in ("JPEG", "MPO"):
                # Decode at the smallest power-of-two scale still >= the target: a 4000x3000
                # photo bound for 224x224 decodes at 500x375, ~8x faster than full size.
                image.draft("RGB", _draft_box(image.size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image, in_place=True) or image
            factor = _shrink_factor(image.size, draft_size) if big else (1, 1)
            if factor != (1, 1):
                return _shrink_to_rgb(image, factor)
            return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"the image data is corrupt or truncated: {exc}") from None


def _shrink_factor(size: tuple[int, int], target: tuple[int, int] | None) -> tuple[int, int]:
    """The integer factors resize(reducing_gap=3) would box-reduce by anyway, per axis."""
    if not target:
        return (1, 1)
    return tuple(max(1, int(s / t / _REDUCING_GAP)) for s, t in zip(size, target, strict=True))


def _shrink_to_rgb(image: Image.Image, factor: tuple[int, int]) -> Image.Image:
    """Convert to RGB and box-reduce by `factor`, one strip at a time: the only full-size
    copy is the decoded image itself (a 40 MP RGBA PNG used to take five)."""
    width, height = image.size
    fx, fy = factor
    out = Image.new("RGB", (-(-width // fx), -(-height // fy)))
    shift = _grey_shift(image)
    step = fy * _STRIP_ROWS
    for top in range(0, height, step):
        strip = _to_rgb(image.crop((0, top, width, min(height, top + step))), shift=shift)
        out.paste(strip.reduce(factor), (0, top // fy))
    # The last row and column stand for a part of a box; `resize` maps exactly the source's
    # extent, as Pillow's own reduce-then-resample does, so the result matches the full path.
    out.info[_EXTENT] = (width / fx, height / fy)
    return out


def _draft_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    # EXIF rotation may swap the axes later, so keep both sides above the larger target side.
    side = max(target)
    return (side, side) if min(size) > side else size


def _grey_shift(image: Image.Image) -> int:
    """16/32-bit grey scales to 8 bits by its bit depth (the whole image's, not a strip's)."""
    if image.mode.startswith("I;16"):
        return 8
    if image.mode == "I":
        return 8 if (image.getextrema()[1] or 0) > 255 else 0
    return 0


def _to_rgb(image: Image.Image, *, shift: int | None = None) -> Image.Image:
    """Flatten any mode (palette, grey, 16-bit, CMYK, alpha) onto RGB, alpha over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits by the bit depth rather than clipping at 255.
        arr = np.asarray(image, dtype=np.uint32)
        arr >>= _grey_shift(image) if shift is None else shift
        image = Image.fromarray(arr.astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize(image: Image.Image, spec: InputSpec) -> Image.Image:
    """Fit an RGB image to the spec's size by its resize rule."""
    size = (spec.width, spec.height)
    resample = _RESAMPLE[spec.resample]
    if image.size == size:
        return image
    if spec.resize == "squash":
        extent = image.info.get(_EXTENT)
        if extent is not None:  # shrunk in strips by load_image: see _shrink_to_rgb
            return image.resize(size, resample=resample, box=(0, 0, *extent))
        return _resize(image, size, resample)
    if spec.resize == "center_crop":
        return ImageOps.fit(image, size, method=resample, centering=(0.5, 0.5))
    fitted = ImageOps.contain(image, size, method=resample)
    canvas = Image.new("RGB", size, _WHITE)
    canvas.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return canvas


def _resize(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    # `reducing_gap` lets Pillow shrink by an integer factor first (cheap box filter), then
    # resample the rest: near-identical output at a fraction of the cost for big photos.
    return image.resize(size, resample=resample, reducing_gap=3.0)


def preprocess(data: bytes, spec: InputSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> uint8 array (height, width, 3): exactly what the model is fed.

    Raises:
        ImageError: a subclass with a stable `code` for every kind of bad input.
    """
    image = load_image(data, max_pixels=max_pixels, draft_size=(spec.width, spec.height))
    return to_tensor(image, spec)


def to_tensor(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """An upright RGB image (from `load_image`, or a camera frame) -> the model's uint8 array."""
    return np.asarray(resize(image, spec), dtype=np.uint8)
