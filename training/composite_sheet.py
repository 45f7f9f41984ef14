"""The foreground masks on a contact sheet, for a person to check before compositing is on.

    python -m training.composite_sheet --sheet masks.png IMAGE_OR_DIR... [--limit 48]

Each photo is drawn with what its mask leaves out dimmed and tinted blue, its coverage, and
whether the mask is trusted (`composite.trusted`); the sheet is the core's contact sheet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from training.composite import WORK_SIDE, foreground_mask, image_files, trusted
from training.config import CompositeConfig
from wastesort.contact_sheet import Tile
from wastesort.contact_sheet import write as write_sheet
from wastesort.errors import ImageError
from wastesort.preprocess import load_image


def shown(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo with what the mask leaves out dimmed and tinted blue."""
    out = rgb.astype(np.float32)
    out[~mask] = 0.35 * out[~mask] + 0.65 * np.array([40.0, 90.0, 200.0])
    return out.astype(np.uint8)


def contact_sheet(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    path: Path,
    *,
    names: Sequence[str] = (),
    cfg: CompositeConfig | None = None,
) -> Path:
    """Every photo with its mask (`shown`), its coverage and, with `cfg`, whether the mask is
    trusted, so a person can see where the masks hold before compositing is turned on."""
    tiles = []
    for k, (rgb, mask) in enumerate(zip(images, masks, strict=True)):
        verdict = "" if cfg is None else (" ok" if trusted(mask, cfg) else " left alone")
        caption = [names[k] if k < len(names) else "", f"{mask.mean() * 100:.0f}% object{verdict}"]
        tiles.append(Tile(Image.fromarray(shown(rgb, mask)), caption))
    title = "foreground masks (blue: background)"
    return write_sheet(tiles, path, title=title, lines=2, columns=6)


def main(argv: list[str] | None = None) -> int:
    """The masks of some photos (files, or folders searched for images) on a sheet."""
    parser = argparse.ArgumentParser(
        prog="python -m training.composite_sheet", description=main.__doc__
    )
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--sheet", type=Path, required=True, help="where to write the sheet")
    parser.add_argument("--limit", type=int, default=48, help="at most this many photos")
    args = parser.parse_args(argv)
    files = []
    for p in args.paths:
        if p.is_dir():
            files += image_files(p)
        elif p.is_file():
            files.append(p)
        else:
            print(f"error: {p} does not exist", file=sys.stderr)
            return 2
    images, masks, names = [], [], []
    for f in files[: args.limit]:
        try:
            image = load_image(f.read_bytes(), draft_size=(WORK_SIDE, WORK_SIDE))
        except (OSError, ImageError) as exc:
            print(f"error: {f}: {exc}", file=sys.stderr)
            return 2
        image.thumbnail((WORK_SIDE, WORK_SIDE))
        rgb = np.asarray(image, np.uint8)
        images.append(rgb)
        masks.append(foreground_mask(rgb))
        names.append(f.name)
    if not images:
        print("error: no images found", file=sys.stderr)
        return 2
    contact_sheet(images, masks, args.sheet, names=names, cfg=CompositeConfig())
    print(f"{len(images)} masks on {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
