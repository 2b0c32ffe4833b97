"""Hair, facial hair, accessories and body of a synthetic face (stage ⓪, used by the renderer).

Every part is built as polygons in face units (see :mod:`difftalk.synth.geometry`) and drawn through
a projection callable that applies the head pose and maps to canvas pixels, so the parts move
rigidly with the head; parts attached to the jaw or lips (beards, goatee, moustache) are built from
the current landmarks and therefore move with the mouth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from difftalk.synth.draw import Painter
from difftalk.synth.geometry import EAR_LEVEL, FaceModel, catmull_rom
from difftalk.synth.identity import Colour, Identity

logger = logging.getLogger(__name__)

Project = Callable[..., np.ndarray]
"""``project(points_units (K, 2), extra_depth=0.0) -> canvas pixels (K, 2)``."""


def shade(colour: Colour, factor: float) -> Colour:
    """``colour`` scaled by ``factor`` (>1 lighter, <1 darker), clipped to 0-255."""
    scaled = np.clip(np.asarray(colour, dtype=np.float64) * factor, 0, 255).round().astype(int)
    return (int(scaled[0]), int(scaled[1]), int(scaled[2]))


def mix(first: Colour, second: Colour, weight: float) -> Colour:
    """Linear blend ``(1 - weight) · first + weight · second``."""
    value = (1 - weight) * np.asarray(first, dtype=np.float64) + weight * np.asarray(second, dtype=np.float64)
    out = np.clip(value.round(), 0, 255).astype(int)
    return (int(out[0]), int(out[1]), int(out[2]))


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, count: int = 40) -> np.ndarray:
    """Points of an elliptic arc ``(count, 2)``; angle 0 = right, π/2 = up (y grows downwards)."""
    phi = np.linspace(start, end, count)
    return np.stack([cx + rx * np.cos(phi), cy - ry * np.sin(phi)], axis=1)


def ellipse(cx: float, cy: float, rx: float, ry: float, count: int = 40) -> np.ndarray:
    """A closed ellipse polygon ``(count, 2)``."""
    return arc(cx, cy, rx, ry, 0.0, 2 * np.pi, count + 1)[:-1]


# ---------------------------------------------------------------------------------------------- hair
def _skull_radius(model: FaceModel) -> float:
    return EAR_LEVEL - model.skull_top


def _hairline(identity: Identity, model: FaceModel) -> np.ndarray:
    """Hairline from the image-left temple over the forehead to the image-right temple ``(K, 2)``."""
    top = model.skull_top * 0.6
    style = identity.hair_style
    if style == "fringe":
        low = -identity.brow_height - 0.12
        xs = np.linspace(-0.8, 0.8, 17)
        ys = low - 0.09 * (np.arange(17) % 2) - 0.03 * (xs / 0.8) ** 2
        middle = np.stack([xs, ys], axis=1)
        return np.concatenate([[[-0.99, 0.15], [-0.93, -0.3]], middle, [[0.93, -0.3], [0.99, 0.15]]])
    if style == "side_part":
        points = [[-0.99, 0.15], [-0.92, -0.2], [-0.75, -0.5], [-0.4, -0.55], [0.05, -0.62], [0.3, top - 0.1]]
        points += [[0.55, top + 0.02], [0.85, -0.42], [0.94, -0.1], [0.99, 0.15]]
        return catmull_rom(np.asarray(points), 6)
    points = [[-0.99, 0.18], [-0.92, -0.15], [-0.85, -0.45], [-0.5, top + 0.06], [0.0, top]]
    points += [[0.5, top + 0.06], [0.85, -0.45], [0.92, -0.15], [0.99, 0.18]]
    return catmull_rom(np.asarray(points), 6)


def _cap(identity: Identity, model: FaceModel, bulk: float = 0.09) -> np.ndarray:
    """Hair covering the top of the skull down to the hairline, polygon in face units."""
    ry = _skull_radius(model)
    outer = arc(0.0, EAR_LEVEL, 1.0 + bulk, ry + bulk * 1.2, -0.15, np.pi + 0.15, 48)  # right → left
    return np.concatenate([outer, _hairline(identity, model)])


def draw_back_hair(painter: Painter, project: Project, identity: Identity, model: FaceModel) -> None:
    """Hair behind the head (long, curly, bun), drawn before the face."""
    colour = identity.hair_colour
    ry = _skull_radius(model)
    style = identity.hair_style
    if style == "long":
        top = arc(0.0, EAR_LEVEL, 1.2, ry + 0.16, 0.0, np.pi, 40)
        bottom = model.chin_y + 0.55
        sides = np.array([[-1.2, EAR_LEVEL], [-1.3, bottom - 0.3], [-1.1, bottom], [1.1, bottom], [1.3, bottom - 0.3]])
        painter.fill(project(np.concatenate([top, sides]), -0.4), shade(colour, 0.8), head=True)
    elif style == "curly":
        centres = arc(0.0, EAR_LEVEL + 0.05, 1.12, ry + 0.12, -0.45, np.pi + 0.45, 19)
        painter.fill(project(ellipse(0.0, EAR_LEVEL - 0.05, 1.15, ry + 0.15), -0.4), shade(colour, 0.85), head=True)
        for index, centre in enumerate(centres):
            radius = 0.22 + 0.05 * (index % 3 == 1)
            painter.fill(project(ellipse(centre[0], centre[1], radius, radius, 20), -0.4), colour, head=True)
    elif style == "bun":
        bun = ellipse(0.0, model.skull_top - 0.12, 0.34, 0.28, 32)
        painter.fill(project(bun, -0.2), shade(colour, 0.9), head=True)


def draw_front_hair(painter: Painter, project: Project, identity: Identity, model: FaceModel, scale: float) -> None:
    """Hair over the skull and forehead, drawn after the face skin.

    Args:
        scale: canvas pixels per face unit (for line widths).
    """
    style = identity.hair_style
    colour = identity.hair_colour
    if style == "bald":
        shine = ellipse(0.25, model.skull_top * 0.7, 0.28, 0.12, 24)
        painter.overlay(project(shine, 0.05), shade(identity.skin, 1.15), 0.35)
        return
    bulk = 0.16 if style == "curly" else 0.09
    cap = _cap(identity, model, bulk)
    painter.fill(project(cap, 0.04), colour, head=True)
    # Strands: curves between the hairline and the crown, a little darker.
    hairline = _hairline(identity, model)
    crown = np.array([0.15 if style == "side_part" else 0.0, model.skull_top - 0.02])
    dark = shade(colour, 0.7)
    for fraction in (0.35, 0.65):
        strand = hairline * (1 - fraction) + crown * fraction
        strand[:, 0] *= 1 + 0.08 * fraction
        painter.line(project(strand[2:-2], 0.05), dark, max(1.0, 0.012 * scale))
    if style == "curly":
        for point in hairline[1:-1:3]:
            painter.fill(project(ellipse(point[0], point[1] - 0.03, 0.08, 0.08, 16), 0.05), colour, head=True)
    if style == "long":
        for side in (-1.0, 1.0):
            lock = np.array([[0.55, model.skull_top * 0.55], [0.98, -0.3], [1.08, 0.4], [1.13, model.chin_y * 0.85]])
            lock = np.concatenate([lock, [[1.2, model.chin_y * 0.7], [1.15, -0.1], [0.9, model.skull_top * 0.7]]])
            painter.fill(project(lock * [side, 1.0], 0.0), colour, head=True)


# ---------------------------------------------------------------------------------------- facial hair
def draw_beard(painter: Painter, project: Project, identity: Identity, model: FaceModel, points: np.ndarray) -> None:
    """Stubble, full beard or goatee from the current landmarks (face units ``(68, 2)``), before the mouth."""
    style = identity.facial_hair
    colour = shade(identity.hair_colour, 0.9)
    nose_y = model.subnasale_y
    if style in ("stubble", "full"):
        jaw = points[2:15].copy()
        if style == "full":
            jaw[:, 1] += 0.08 * np.sin(np.linspace(0, np.pi, 13))
            jaw[:, 0] *= 1.03
        top = np.array([[0.93, 0.35], [0.7, nose_y - 0.02], [0.3, nose_y + 0.03], [-0.3, nose_y + 0.03]])
        top = np.concatenate([top, [[-0.7, nose_y - 0.02], [-0.93, 0.35]]])
        region = catmull_rom(np.concatenate([jaw, top]), 4, closed=True)
        if style == "stubble":
            painter.overlay(project(region, 0.02), shade(colour, 0.6), 0.22)
        else:
            painter.fill(project(region, 0.04), colour, head=True)
    elif style == "goatee":
        lower_lip = points[[59, 58, 57, 56, 55]] + [0.0, 0.03]
        chin = points[[10, 9, 8, 7, 6]] * [0.9, 1.0] + [0.0, 0.02]
        painter.fill(project(catmull_rom(np.concatenate([lower_lip, chin]), 4, closed=True), 0.04), colour)


def draw_moustache(
    painter: Painter, project: Project, identity: Identity, model: FaceModel, points: np.ndarray
) -> None:
    """Moustache over the upper lip (full beards and moustaches), after the mouth."""
    if identity.facial_hair not in ("moustache", "full"):
        return
    left, right = points[48], points[54]
    nose_y = model.subnasale_y + 0.03
    top = np.array([[right[0] + 0.04, right[1] - 0.02], [0.45 * right[0], nose_y + 0.01], [0.0, nose_y + 0.03]])
    top = np.concatenate([top, [[0.45 * left[0], nose_y + 0.01], [left[0] - 0.04, left[1] - 0.02]]])
    tips = np.array([[left[0] - 0.08, left[1] + 0.07], [right[0] + 0.08, right[1] + 0.07]])
    lip = points[[49, 50, 51, 52, 53]] - [0.0, 0.012]
    outline = np.concatenate([top, tips[:1], lip, tips[1:]])
    painter.fill(project(catmull_rom(outline, 4, closed=True), 0.1), shade(identity.hair_colour, 0.85))


# ---------------------------------------------------------------------------------------- accessories
def draw_glasses(painter: Painter, project: Project, identity: Identity, scale: float) -> None:
    """Round or square glasses (frames, tinted lenses, bridge, temples)."""
    if identity.glasses == "none":
        return
    colour, width = identity.glasses_colour, max(1.0, 0.028 * scale)
    half = identity.eye_width * 1.4
    for side in (-1.0, 1.0):
        cx = side * identity.eye_spacing
        if identity.glasses == "round":
            rim = ellipse(cx, 0.0, half, half * 0.92, 40)
        else:
            corners = np.array([[-1.0, -0.75], [1.0, -0.75], [1.0, 0.75], [-1.0, 0.75]]) * half
            rim = catmull_rom(corners, 3, closed=True) + np.array([cx, 0.02])  # a rounded rectangle
        lens = project(rim, 0.15)
        painter.overlay(lens, (200, 225, 240), 0.18)
        painter.line(lens, colour, width, closed=True)
        temple = np.array([[side * (identity.eye_spacing + half), -0.02], [side * 1.02, 0.02]])
        painter.line(project(temple, 0.1), colour, width)
    inner = identity.eye_spacing - half
    bridge = np.array([[-inner, -0.02], [-0.5 * inner, -0.07], [0.5 * inner, -0.07], [inner, -0.02]])
    painter.line(project(catmull_rom(bridge, 6), 0.25), colour, width)


def draw_earrings(painter: Painter, project: Project, identity: Identity, scale: float) -> None:
    """Hoop earrings under the ear lobes."""
    if not identity.earrings:
        return
    for side in (-1.0, 1.0):
        hoop = ellipse(side * 1.05, 0.46, 0.055, 0.07, 24)
        painter.line(project(hoop, -0.1), identity.earring_colour, max(1.0, 0.022 * scale), closed=True)


def draw_ears(painter: Painter, project: Project, identity: Identity, scale: float) -> None:
    """Both ears (outer shape and a darker inner fold), before the face."""
    for side in (-1.0, 1.0):
        outer = ellipse(side * 1.0, 0.22, 0.14, 0.24, 28)
        painter.fill(project(outer, -0.05), shade(identity.skin, 0.93), head=True)
        fold = arc(side * 1.03, 0.21, 0.07, 0.15, -1.6 if side > 0 else np.pi + 1.6, 1.6 if side > 0 else np.pi - 1.6)
        painter.line(project(fold, -0.05), shade(identity.skin, 0.72), max(1.0, 0.018 * scale))


def draw_body(
    painter: Painter, project_head: Project, project_body: Project, identity: Identity, model: FaceModel
) -> None:
    """Neck (from the head down to the body), shirt and neckline."""
    neck_colour = shade(identity.skin, 0.84)
    top = project_head(np.array([[-0.52, 0.4], [0.52, 0.4]]), -0.3)
    bottom = project_body(np.array([[0.6, model.chin_y + 1.3], [-0.6, model.chin_y + 1.3]]), 0.0)
    painter.fill(np.concatenate([top, bottom]), neck_colour, head=True)
    shoulders = arc(0.0, model.chin_y + 1.5, 2.2, 0.75, 0.0, np.pi, 40)
    shirt = np.concatenate([shoulders, [[-2.4, model.chin_y + 4.0], [2.4, model.chin_y + 4.0]]])
    painter.fill(project_body(shirt, 0.0), identity.shirt_colour, head=False)
    neckline = arc(0.0, model.chin_y + 0.78, 0.5, 0.24, np.pi, 2 * np.pi, 24)
    opening = np.concatenate([[[-0.58, model.chin_y + 0.6]], neckline, [[0.58, model.chin_y + 0.6]]])
    painter.fill(project_body(opening, 0.0), neck_colour, head=True)
    painter.line(project_body(neckline, 0.0), shade(identity.shirt_colour, 0.7), 2.0)
