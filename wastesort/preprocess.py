"""Image bytes -> the uint8 tensor the model takes. Defined here once for every consumer.

Training feeds the network arrays made by `preprocess`, the API and the edge runner call it
before every invoke, so the same JPEG yields the same tensor everywhere.
"""

from __future__ import annotations

import io
import warnings

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

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_WHITE = (255, 255, 255)


def load_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size=None
) -> Image.Image:
    """Decode image bytes into an upright RGB image.

    Args:
        data: the encoded image (JPEG, PNG, WebP, BMP, or the first frame of a GIF).
        max_pixels: width x height above which the image is refused, checked from the header
            before any pixel is decoded.
        draft_size: (width, height) the caller will shrink to; lets the JPEG decoder decode at
            1/2, 1/4 or 1/8 scale instead of full size.

    Raises:
        EmptyImageError, UnsupportedFormatError, TooManyPixelsError, CorruptImageError.
    """
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at 2x errors) on its own bomb limit; ours is explicit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedFormatError(
            "not a supported image (JPEG, PNG, WebP, BMP or GIF expected)"
        ) from None
    except Image.DecompressionBombError as exc:  # Pillow's own hard limit, from the header
        raise TooManyPixelsError(f"{exc}; the limit is {max_pixels:,} pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"the image header cannot be read: {exc}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixelsError(
            f"the image has {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}"
        )
    if width < 1 or height < 1:
        raise CorruptImageError("the image has no pixels")

    try:
        if draft_size and image.format in ("JPEG", "MPO"):
            # Decode at the smallest power-of-two scale still >= the target: a 4000x3000
            # photo bound for 224x224 decodes at 500x375, ~8x faster than full size.
            image.draft("RGB", _draft_box(image.size, draft_size))
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"the image data is corrupt or truncated: {exc}") from None


def _draft_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    # EXIF rotation may swap the axes later, so keep both sides above the larger target side.
    side = max(target)
    return (side, side) if min(size) > side else size


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any mode (palette, grey, 16-bit, CMYK, alpha) onto RGB, alpha over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits by the bit depth rather than clipping at 255.
        arr = np.asarray(image, dtype=np.uint32)
        shift = 8 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 0
        image = Image.fromarray((arr >> shift).astype(np.uint8), mode="L")
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
