"""Image files: read RGB images and write PNG grids (stage ①)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


def save_image_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> Path:
    """Write a grid of equally sized uint8 ``(H, W, 3)`` images as a PNG, rows top to bottom.

    Args:
        path: output ``.png`` path (parent folders are created).
        rows: one list of images per row; all images share one size.
        gap: white pixels between cells.
    """
    if not rows or not rows[0]:
        raise ValueError("save_image_grid needs at least one image")
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            if image.shape != (h, w, 3) or image.dtype != np.uint8:
                raise ValueError(f"grid cell ({i}, {j}) is {image.dtype} {image.shape}, expected uint8 {(h, w, 3)}")
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


@contextmanager
def _open_image(path: str | Path) -> Iterator[Image.Image]:
    """PIL's image of ``path`` (header read, pixels not yet decoded), with this module's errors."""
    from PIL import UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as opened:
            yield opened
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc}); use a PNG or JPEG file") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, 3)`` RGB (EXIF orientation applied).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image.
    """
    from PIL import ImageOps

    with _open_image(path) as opened:
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` in pixels of an image file as :func:`read_image` returns it (EXIF orientation
    applied), read from the header without decoding the pixels.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image.
    """
    with _open_image(path) as opened:
        width, height = opened.size
        orientation = opened.getexif().get(0x0112, 1)  # EXIF Orientation; 5-8 swap the sides
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
