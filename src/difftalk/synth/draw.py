"""Anti-aliased drawing primitives and backgrounds for the synthetic face renderer (stage ⓪).

:class:`Painter` wraps an RGB uint8 canvas (usually supersampled) and draws sub-pixel-accurate,
anti-aliased shapes with OpenCV (``cv2.LINE_AA`` with fixed-point coordinates), plus alpha overlays
and drawing clipped to a polygon (iris inside the eyelids, teeth inside the lips). It also keeps a
coverage mask of the head, on which the lighting is applied at the end. Coordinates are canvas
pixels ``(K, 2)`` float (x, y).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np

from difftalk.synth.identity import Colour, Identity

logger = logging.getLogger(__name__)

SHIFT = 4
"""Fractional bits of the fixed-point coordinates passed to OpenCV."""
_ONE = 1 << SHIFT


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64).reshape(-1, 1, 2) * _ONE).astype(np.int32)


class Painter:
    """Draws on ``image`` (uint8 ``(H, W, 3)`` RGB, modified in place).

    Args:
        image: the canvas.
    """

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.mask = np.zeros(image.shape[:2], dtype=np.uint8)
        """Head coverage (skin and hair), 0-255; the lighting is applied inside it."""

    # ----------------------------------------------------------------- basic shapes
    def fill(self, points: np.ndarray, colour: Colour, head: bool | None = None) -> None:
        """Fill a polygon; ``head=True`` adds it to the head mask, ``False`` removes it, ``None`` leaves it."""
        cv2.fillPoly(self.image, [_fixed(points)], colour, cv2.LINE_AA, SHIFT)
        if head is not None:
            cv2.fillPoly(self.mask, [_fixed(points)], 255 if head else 0, cv2.LINE_AA, SHIFT)

    def line(self, points: np.ndarray, colour: Colour, thickness: float, closed: bool = False) -> None:
        """An open (or closed) polyline of ``thickness`` canvas pixels."""
        width = max(1, round(thickness))
        cv2.polylines(self.image, [_fixed(points)], closed, colour, width, cv2.LINE_AA, SHIFT)

    def disc(self, centre: np.ndarray, radius: float, colour: Colour) -> None:
        """A filled circle."""
        x, y = (round(float(v) * _ONE) for v in np.asarray(centre).reshape(2))
        cv2.circle(self.image, (x, y), max(1, round(radius * _ONE)), colour, -1, cv2.LINE_AA, SHIFT)

    # ----------------------------------------------------------------- compositing
    def _bbox(self, points: np.ndarray, margin: int = 2) -> tuple[int, int, int, int] | None:
        height, width = self.image.shape[:2]
        x0 = max(int(np.floor(points[:, 0].min())) - margin, 0)
        y0 = max(int(np.floor(points[:, 1].min())) - margin, 0)
        x1 = min(int(np.ceil(points[:, 0].max())) + margin, width)
        y1 = min(int(np.ceil(points[:, 1].max())) + margin, height)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def overlay(self, points: np.ndarray, colour: Colour, alpha: float) -> None:
        """Blend a filled polygon over the canvas with opacity ``alpha`` in [0, 1]."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        box = self._bbox(points)
        if box is None or alpha <= 0:
            return
        x0, y0, x1, y1 = box
        patch = self.image[y0:y1, x0:x1]
        cover = np.zeros(patch.shape[:2], dtype=np.uint8)
        cv2.fillPoly(cover, [_fixed(points - [x0, y0])], 255, cv2.LINE_AA, SHIFT)
        weight = cover.astype(np.float32)[..., None] * (alpha / 255.0)
        blended = patch * (1.0 - weight) + np.asarray(colour, dtype=np.float32) * weight
        patch[...] = np.round(blended).astype(np.uint8)

    def clipped(self, clip: np.ndarray, draw: Callable[[Painter, np.ndarray], None]) -> None:
        """Run ``draw(painter, origin)`` on a sub-canvas and keep the result only inside ``clip``.

        ``draw`` receives a :class:`Painter` of the clip's bounding box and that box's canvas origin
        ``(2,)``, which it must subtract from its coordinates.
        """
        clip = np.asarray(clip, dtype=np.float64).reshape(-1, 2)
        box = self._bbox(clip)
        if box is None:
            return
        x0, y0, x1, y1 = box
        patch = self.image[y0:y1, x0:x1]
        origin = np.array([x0, y0], dtype=np.float64)
        sub = Painter(patch.copy())
        draw(sub, origin)
        cover = np.zeros(patch.shape[:2], dtype=np.uint8)
        cv2.fillPoly(cover, [_fixed(clip - origin)], 255, cv2.LINE_AA, SHIFT)
        weight = cover.astype(np.float32)[..., None] / 255.0
        patch[...] = np.round(sub.image * weight + patch * (1.0 - weight)).astype(np.uint8)

    def light(self, centre: np.ndarray, radius: float, angle: float, strength: float) -> None:
        """Directional shading inside the head mask: brighter towards the light, darker away.

        Args:
            centre: head centre, canvas pixels.
            radius: head radius, canvas pixels.
            angle: direction the light comes from (radians, 0 = image right, y down).
            strength: maximum relative brightness change.
        """
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if rows.size == 0 or strength <= 0:
            return
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        xs = (np.arange(x0, x1, dtype=np.float32) - centre[0]) / radius
        ys = (np.arange(y0, y1, dtype=np.float32) - centre[1]) / radius
        gradient = np.clip(ys[:, None] * np.sin(angle) + xs[None, :] * np.cos(angle), -1.0, 1.0)
        gain = 1.0 + strength * gradient * (self.mask[y0:y1, x0:x1].astype(np.float32) / 255.0)
        region = self.image[y0:y1, x0:x1]
        region[...] = np.clip(region * gain[..., None], 0, 255).astype(np.uint8)


def make_background(identity: Identity, height: int, width: int) -> np.ndarray:
    """The static background of an identity, uint8 ``(height, width, 3)`` RGB."""
    first = np.asarray(identity.background_colours[0], dtype=np.float32)
    second = np.asarray(identity.background_colours[1], dtype=np.float32)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    kind = identity.background
    if kind == "solid":
        weight = np.zeros((height, width), dtype=np.float32) + 0.15 * ys
    elif kind == "vertical":
        weight = np.broadcast_to(ys, (height, width))
    elif kind == "diagonal":
        weight = (xs + ys) / 2
    elif kind == "radial":
        weight = np.clip(np.hypot(xs - 0.5, ys - 0.42) / 0.7, 0.0, 1.0)
    elif kind == "stripes":
        period = 0.11 + 0.1 * (identity.light_strength / 0.3)
        phase = ((xs * 0.8 + ys * 0.35) / period) % 1.0
        weight = np.clip((np.abs(phase - 0.5) - 0.22) * 12.0, 0.0, 1.0) * 0.8 + 0.1 * ys
    elif kind == "dots":
        period = 0.09
        dx = (xs % period) / period - 0.5
        dy = ((ys + 0.5 * period * (np.floor(xs / period) % 2)) % period) / period - 0.5
        weight = np.clip((0.28 - np.hypot(dx, dy)) * 14.0, 0.0, 1.0)
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    weight = np.broadcast_to(weight, (height, width))[..., None]
    image = first * (1.0 - weight) + second * weight
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
