"""Contact sheets: photos as captioned thumbnails on one PNG, for a person to look at.

Pillow only (no matplotlib), so the core can draw one wherever it runs: the shadow report puts
the photos two models disagree on most here, training its most confident mistakes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from wastesort.errors import ImageError, WastesortError
from wastesort.preprocess import load_image

THUMB = 160
"""The side of a thumbnail's square, in pixels."""
LINE = 14
"""The height of one caption line (Pillow's built-in bitmap font)."""
PAD = 6
BACKGROUND, INK, MISSING = (255, 255, 255), (20, 20, 20), (200, 200, 200)


@dataclass(frozen=True)
class Tile:
    """One photo and the caption lines under it."""

    image: bytes | Image.Image | None
    """Encoded bytes, a decoded image, or None (drawn as a grey square: unreadable)."""
    caption: Sequence[str] = ()


def size(count: int, *, columns: int = 4, lines: int = 3, thumb: int = THUMB) -> tuple[int, int]:
    """(width, height) of the sheet for `count` tiles with `lines` caption lines each."""
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    cell_w, cell_h = thumb + 2 * PAD, thumb + 2 * PAD + lines * LINE
    return columns * cell_w, LINE + PAD + rows * cell_h


def _thumbnail(image: bytes | Image.Image | None, thumb: int) -> Image.Image:
    if isinstance(image, bytes):
        try:
            image = load_image(image, draft_size=(thumb, thumb))
        except ImageError:
            image = None
    if image is None:
        return Image.new("RGB", (thumb, thumb), MISSING)
    small = image.convert("RGB")
    small.thumbnail((thumb, thumb))
    return small


def write(
    tiles: Sequence[Tile],
    out: str | Path,
    *,
    title: str = "",
    columns: int = 4,
    lines: int = 3,
    thumb: int = THUMB,
) -> Path:
    """Draw the tiles row by row (each caption cut to `lines` lines) under a one-line title.

    Raises:
        WastesortError (code `usage`): the PNG cannot be written.
    """
    width, height = size(len(tiles), columns=columns, lines=lines, thumb=thumb)
    columns = max(1, min(columns, len(tiles)))
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text(
        (PAD, PAD // 2), title or ("nothing to show" if not tiles else ""), fill=INK, font=font
    )
    cell_w, cell_h = thumb + 2 * PAD, thumb + 2 * PAD + lines * LINE
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * cell_w + PAD, LINE + PAD + (i // columns) * cell_h + PAD
        small = _thumbnail(tile.image, thumb)
        sheet.paste(
            small, (x + (thumb - small.width) // 2, y + thumb - small.height)
        )  # on its caption
        for j, text in enumerate(list(tile.caption)[:lines]):
            draw.text(
                (x, y + thumb + 2 + j * LINE), _fit(draw, text, font, thumb), fill=INK, font=font
            )
    out = Path(out)
    try:
        sheet.save(out, format="PNG")
    except OSError as exc:
        raise WastesortError(f"cannot write {out}: {exc.strerror or exc}", code="usage") from None
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """The text, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(f"{text}...", font=font) > width:
        text = text[:-1]
    return f"{text}..."
