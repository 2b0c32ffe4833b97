"""The synthetic face renderer: identity + per-frame state → RGB frame and its 68 landmarks (stage ⓪).

A 2-D cartoon face drawn with OpenCV (anti-aliased, on a 2× supersampled canvas, then area-downscaled
to ``size``): background, back hair, neck and shirt, ears, the face (outline from the jaw landmarks
plus the skull), blush, front hair, beard, nose, eyes (sclera, iris, pupil, lids that close in
blinks), brows, the mouth (lips from the outer and inner lip landmarks, dark cavity, upper and lower
teeth, tongue), moustache, glasses and earrings, and a directional light over the head. The face is
drawn *from* the landmarks that :class:`~difftalk.synth.geometry.FaceModel` returns, so the ground
truth is where the features are; the jaw (points 4-12) drops as the mouth opens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from difftalk.synth import parts
from difftalk.synth.draw import Painter, make_background
from difftalk.synth.geometry import EAR_LEVEL, FaceModel, FaceState, HeadPose, catmull_rom, head_depth
from difftalk.synth.identity import Identity
from difftalk.synth.parts import mix, shade

logger = logging.getLogger(__name__)

SUPERSAMPLE = 2
"""Canvas side / frame side."""
_SCLERA = (246, 243, 236)
_CAVITY = (70, 22, 28)
_TEETH = (248, 246, 236)
_TONGUE = (196, 92, 98)


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered frame."""

    image: np.ndarray
    """uint8 ``(size, size, 3)`` RGB."""
    landmarks: np.ndarray
    """``(68, 2)`` float32 frame pixel coordinates (x, y), iBUG order."""


class FaceRenderer:
    """Renders one identity at a fixed frame size.

    Args:
        identity: the face to draw.
        size: frame side in pixels (e.g. 128, 256, 512).
        supersample: canvas oversampling factor (1 = draw at ``size`` directly).
    """

    def __init__(self, identity: Identity, size: int, supersample: int = SUPERSAMPLE) -> None:
        if size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {size}")
        if supersample < 1:
            raise ValueError(f"supersample must be at least 1, got {supersample}")
        self.identity = identity
        self.size = size
        self.ss = supersample
        self.model = FaceModel(identity, size)
        self._background = make_background(identity, size * supersample, size * supersample)
        ry = EAR_LEVEL - self.model.skull_top
        self._skull = parts.arc(0.0, EAR_LEVEL, 1.0, ry, 0.0, np.pi, 48)[1:-1]  # right ear → left ear, over the top

    # ------------------------------------------------------------------ projection helpers
    def _projector(self, pose: HeadPose) -> parts.Project:
        """``project(points_units, extra_depth)`` → canvas pixels under ``pose``."""
        model = self.model

        def project(points: np.ndarray, extra_depth: float | np.ndarray = 0.0) -> np.ndarray:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            return self._to_canvas(model.project(points, head_depth(points) + extra_depth, pose))

        return project

    def _to_canvas(self, frame_points: np.ndarray) -> np.ndarray:
        return (np.asarray(frame_points, dtype=np.float64) + 0.5) * self.ss - 0.5

    # ------------------------------------------------------------------ rendering
    def render(self, state: FaceState) -> RenderedFrame:
        """Draw one frame.

        Args:
            state: articulation, eyes, brows and head pose of the frame.

        Returns:
            The frame and its landmarks.
        """
        ident, model = self.identity, self.model
        units, depth = model.landmarks_units(state)
        landmarks = model.project(units, depth, state.pose)
        canvas_points = self._to_canvas(landmarks)
        project = self._projector(state.pose)
        pose = state.pose
        body_pose = HeadPose(scale=pose.scale, tx=0.6 * pose.tx, ty=0.6 * pose.ty)
        project_body = self._projector(body_pose)
        scale = model.unit * pose.scale * self.ss  # canvas pixels per face unit

        painter = Painter(self._background.copy())
        parts.draw_back_hair(painter, project, ident, model)
        parts.draw_body(painter, project, project_body, ident, model)
        # Chin shadow on the neck, following the lower jaw.
        shadow = np.concatenate([units[3:14] + np.array([0.0, 0.07]), units[13:2:-1] * [0.8, 1.0] - [0.0, 0.25]])
        painter.overlay(project(shadow, -0.2), shade(ident.skin, 0.55), 0.35)
        parts.draw_ears(painter, project, ident, scale)
        # Face: jaw landmarks (smooth curve through them) closed over the skull.
        jaw_curve = catmull_rom(canvas_points[0:17], 6)
        skull = project(self._skull)
        painter.fill(np.concatenate([jaw_curve, skull]), ident.skin, head=True)
        self._draw_blush(painter, project)
        parts.draw_front_hair(painter, project, ident, model, scale)
        parts.draw_beard(painter, project, ident, model, units)
        self._draw_nose(painter, project, canvas_points, scale)
        self._draw_eyes(painter, project, canvas_points, state, scale)
        self._draw_brows(painter, project, units, scale)
        self._draw_mouth(painter, project, canvas_points, state, scale)
        parts.draw_moustache(painter, project, ident, model, units)
        parts.draw_glasses(painter, project, ident, scale)
        parts.draw_earrings(painter, project, ident, scale)
        centre = project(np.array([[0.0, 0.3]]))[0]
        painter.light(centre, 1.4 * scale, ident.light_angle, ident.light_strength)
        image = painter.image
        if self.ss > 1:
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return RenderedFrame(image=np.ascontiguousarray(image), landmarks=landmarks.astype(np.float32))

    # ------------------------------------------------------------------ features
    def _draw_blush(self, painter: Painter, project: parts.Project) -> None:
        ident = self.identity
        if ident.cheek_blush <= 0.05:
            return
        for side in (-1.0, 1.0):
            cheek = parts.ellipse(side * 0.58, ident.nose_length * 0.95, 0.17, 0.1, 24)
            painter.overlay(project(cheek, 0.02), mix(ident.skin, (235, 95, 95), 0.5), 0.3 * ident.cheek_blush)

    def _draw_nose(self, painter: Painter, project: parts.Project, points: np.ndarray, scale: float) -> None:
        ident = self.identity
        length, width = ident.nose_length, ident.nose_width
        skin = ident.skin
        away = -1.0 if math.cos(ident.light_angle) >= 0 else 1.0  # the side facing away from the light
        side_shadow = np.array(
            [[away * 0.05, 0.12 * length], [away * 0.09, 0.8 * length], [away * 0.9 * width, length + 0.03]]
        )
        side_shadow = np.concatenate([side_shadow, [[away * 0.35 * width, length + 0.02], [away * 0.02, 0.5 * length]]])
        painter.overlay(project(catmull_rom(side_shadow, 5, closed=True), 0.2), shade(skin, 0.6), 0.25)
        tip = parts.ellipse(0.0, length - 0.02, 0.1, 0.075, 24)
        painter.overlay(project(tip, 0.3), shade(skin, 1.15), 0.35)
        # Alae and the base of the nose through landmarks 31-35.
        base = catmull_rom(points[31:36], 6)
        painter.line(base, shade(skin, 0.62), max(1.0, 0.022 * scale))
        for side in (-1.0, 1.0):
            wing = np.array([[side * width * 1.02, length - 0.06], [side * width * 1.08, length + 0.0]])
            wing = np.concatenate([wing, [[side * width * 0.95, self.model.subnasale_y - 0.035]]])
            painter.line(project(catmull_rom(wing, 5), 0.12), shade(skin, 0.7), max(1.0, 0.018 * scale))
            nostril = parts.ellipse(side * 0.48 * width, self.model.subnasale_y - 0.025, 0.045, 0.022, 16)
            painter.fill(project(nostril, 0.18), shade(skin, 0.45))

    def _draw_eyes(
        self, painter: Painter, project: parts.Project, points: np.ndarray, state: FaceState, scale: float
    ) -> None:
        ident = self.identity
        lash = shade(ident.hair_colour, 0.45)
        lid_width = max(1.0, 0.03 * scale)
        gx, gy = state.gaze
        for first, side in ((36, -1.0), (42, 1.0)):
            outline = catmull_rom(points[first : first + 6], 8, closed=True)
            cx = side * ident.eye_spacing
            # Crease above the open lid (static skin fold).
            crease = parts.arc(cx, 0.02, ident.eye_width * 0.95, ident.eye_height * 1.7, 0.35, np.pi - 0.35, 16)
            painter.line(project(crease, -0.04), shade(ident.skin, 0.78), max(1.0, 0.014 * scale))
            iris_centre = np.array([[cx + gx * ident.eye_width * 0.45, gy * ident.eye_height * 0.35 - 0.01]])
            iris_px = project(iris_centre, 0.0)[0]
            radius = ident.eye_height * 1.0 * scale
            highlight = iris_px + np.array([0.35, -0.4]) * radius

            def draw_eye(
                sub: Painter,
                origin: np.ndarray,
                iris_px: np.ndarray = iris_px,
                radius: float = radius,
                highlight: np.ndarray = highlight,
                outline: np.ndarray = outline,
            ) -> None:
                sub.fill(outline - origin, _SCLERA)
                sub.disc(iris_px - origin, radius, ident.iris)
                sub.disc(iris_px - origin, radius * 0.72, shade(ident.iris, 0.75))
                sub.disc(iris_px - origin, radius * 0.42, (18, 14, 14))
                sub.disc(highlight - origin, radius * 0.2, (255, 255, 255))

            openness = float(np.linalg.norm(points[first + 1] - points[first + 5]))
            if openness > 0.6 * self.ss:
                painter.clipped(outline, draw_eye)
            upper = catmull_rom(points[first : first + 4], 8)
            painter.line(upper, lash, lid_width)
            lower = catmull_rom(points[[first + 3, first + 4, first + 5, first]], 8)
            painter.line(lower, shade(ident.skin, 0.7), max(1.0, 0.012 * scale))

    def _draw_brows(self, painter: Painter, project: parts.Project, units: np.ndarray, scale: float) -> None:
        ident = self.identity
        thickness = ident.brow_thickness
        for start, inner_last in ((17, True), (22, False)):
            brow = units[start : start + 5]
            taper = np.linspace(0.55, 1.0, 5) if inner_last else np.linspace(1.0, 0.55, 5)
            top = brow - np.stack([np.zeros(5), 0.5 * thickness * taper], axis=1)
            bottom = brow + np.stack([np.zeros(5), 0.5 * thickness * taper], axis=1)
            shape = np.concatenate([catmull_rom(top, 5), catmull_rom(bottom[::-1], 5)])
            painter.fill(project(shape, 0.05), ident.brow_colour)

    def _draw_mouth(
        self, painter: Painter, project: parts.Project, points: np.ndarray, state: FaceState, scale: float
    ) -> None:
        ident, model = self.identity, self.model
        lip = ident.lip_colour
        outer = points[48:60]
        inner = points[60:68]
        # Upper lip: 48-54 along the top, back along the inner upper lip 64-60.
        upper_outline = np.concatenate([catmull_rom(outer[0:7], 6), catmull_rom(inner[[4, 3, 2, 1, 0]], 6)])
        lower_outline = np.concatenate(
            [catmull_rom(outer[[6, 7, 8, 9, 10, 11, 0]], 6), catmull_rom(inner[[0, 7, 6, 5, 4]], 6)]
        )
        painter.fill(lower_outline, lip)
        painter.fill(upper_outline, shade(lip, 0.88))
        mouth = model.mouth_shape(np.asarray(state.articulation))
        cavity = catmull_rom(inner[[0, 1, 2, 3, 4, 5, 6, 7]], 6, closed=True)
        gap = float(np.linalg.norm(points[62] - points[66]))
        if gap > 0.5 * self.ss:
            hw = mouth["half_width"] * 0.78
            base_y = model.mouth_y - 0.05 * mouth["round"]  # protruded round lips hide the teeth
            upper_teeth = project(
                np.array([[-hw, base_y - 0.2], [hw, base_y - 0.2], [hw, base_y + 0.035], [-hw, base_y + 0.035]]), 0.1
            )
            low_top = mouth["lower_inner"] - 0.035 * (1.0 - mouth["round"])  # lower teeth show above the lip
            lower_teeth = project(
                np.array(
                    [[-hw * 0.9, low_top], [hw * 0.9, low_top], [hw * 0.9, low_top + 0.2], [-hw * 0.9, low_top + 0.2]]
                ),
                0.1,
            )
            tongue = project(parts.ellipse(0.0, mouth["lower_inner"] - 0.01, hw * 0.8, 0.09, 24), 0.05)
            gum_line = max(1.0, 0.008 * scale)

            def draw_inside(sub: Painter, origin: np.ndarray) -> None:
                sub.fill(cavity - origin, _CAVITY)
                sub.fill(tongue - origin, _TONGUE)
                sub.fill(upper_teeth - origin, _TEETH)
                sub.fill(lower_teeth - origin, shade(_TEETH, 0.93))
                for fraction in (0.3, 0.5, 0.7):
                    gap_line = upper_teeth[0] + fraction * (upper_teeth[1] - upper_teeth[0])
                    edge = gap_line + (upper_teeth[2] - upper_teeth[1])
                    sub.line(np.stack([gap_line, edge]) - origin, shade(_TEETH, 0.85), gum_line)

            painter.clipped(cavity, draw_inside)
        # The lip seam (the whole mouth line when closed) and a highlight on the lower lip.
        seam = catmull_rom(inner[[0, 1, 2, 3, 4]], 6)
        painter.line(seam, mix(lip, _CAVITY, 0.6), max(1.0, 0.02 * scale))
        if gap <= 0.5 * self.ss:
            corners = np.stack([outer[0], inner[0]]), np.stack([outer[6], inner[4]])
            for corner in corners:
                painter.line(corner, mix(lip, _CAVITY, 0.5), max(1.0, 0.015 * scale))
        shine_centre = 0.5 * (points[57] + points[66]) - np.array([0.0, 0.1]) * (points[57] - points[66])
        shine_size = 0.22 * abs(float(points[54, 0] - points[48, 0]))
        shine = parts.ellipse(shine_centre[0], shine_centre[1], shine_size, 0.25 * shine_size, 16)
        painter.overlay(shine, shade(lip, 1.35), 0.35)
