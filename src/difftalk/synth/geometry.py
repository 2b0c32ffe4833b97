"""Face geometry: the 68 iBUG landmarks of a synthetic face and the head-pose projection (stage ⓪).

Shapes are built in *face units*: origin midway between the eye centres, x to the image right, y
down, 1 unit = half the face width at ear level. Every point also has a depth ``z`` (towards the
camera) from a simple head model, so a small yaw and pitch can be applied before the in-plane roll,
scale and translation that place the head in the frame (orthographic projection).

The landmarks follow the iBUG 68-point layout of :mod:`difftalk.preprocess.landmarks` (0-16 jaw from
the subject's right ear = image left, 17-26 brows, 27-30 nose bridge to tip, 31-35 nostrils with 33 the
subnasale, 36-47 eyes, 48-59 outer and 60-67 inner lips). The lower jaw (points 4-12), the lower lip and
the mouth opening move with the articulation; points 0-3 and 13-16 never do. The renderer draws the
face from these same points, so the ground truth is where the drawn features are.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from difftalk.preprocess.landmarks import NUM_LANDMARKS
from difftalk.synth.articulation import JAW_OPEN, LIP_CLOSURE, LIP_ROUND, LIP_SPREAD
from difftalk.synth.identity import Identity

logger = logging.getLogger(__name__)

JAW_DROP = 0.34
"""Chin drop at ``jaw_open = 1``, face units."""
EAR_LEVEL = 0.08
"""y of jaw points 0 and 16 (just below the eye line)."""
HEAD_CENTRE_Y = 0.45
"""Vertical position of the head's centre as a fraction of the frame size."""
_JAW_WEIGHTS = np.zeros(17)
_JAW_WEIGHTS[4:13] = (0.25, 0.5, 0.75, 0.93, 1.0, 0.93, 0.75, 0.5, 0.25)


@dataclass(frozen=True)
class HeadPose:
    """Rigid head pose: rotations in degrees, translation as a fraction of the frame size."""

    yaw: float = 0.0
    """Turn left/right (positive: the face turns towards the image right)."""
    pitch: float = 0.0
    """Nod (positive: chin down)."""
    roll: float = 0.0
    """In-plane rotation (positive: clockwise on screen)."""
    scale: float = 1.0
    tx: float = 0.0
    ty: float = 0.0


@dataclass(frozen=True)
class FaceState:
    """Everything that changes from frame to frame."""

    articulation: tuple[float, float, float, float, float] = (0.0, 0.2, 0.0, 0.0, 0.0)
    """jaw_open, lip_spread, lip_round, lip_closure, voicing, each in [0, 1]."""
    eye_open: float = 1.0
    """1 = open, 0 = shut (blink)."""
    gaze: tuple[float, float] = (0.0, 0.0)
    """Iris offset in [-1, 1]² (x right, y down)."""
    brow_raise: float = 0.0
    """Brow lift in [-1, 1]."""
    pose: HeadPose = HeadPose()


def catmull_rom(points: np.ndarray, samples_per_segment: int = 8, closed: bool = False) -> np.ndarray:
    """Dense smooth curve ``(M, 2)`` through ``points`` ``(K, 2)`` (uniform Catmull-Rom spline)."""
    points = np.asarray(points, dtype=np.float64)
    if closed:
        padded = np.concatenate([points[-1:], points, points[:2]])
        count = len(points)
    else:
        padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
        count = len(points) - 1
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)
    basis = 0.5 * np.stack(
        [-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3, t + 4 * t**2 - 3 * t**3, -(t**2) + t**3], axis=1
    )  # (S, 4) weights of p0..p3
    windows = np.stack([padded[i : i + count] for i in range(4)], axis=1)  # (count, 4, 2)
    curve = np.einsum("sj,cjd->csd", basis, windows).reshape(-1, 2)
    if not closed:
        curve = np.concatenate([curve, points[-1:]])
    return curve


def head_depth(points: np.ndarray) -> np.ndarray:
    """Depth ``(K,)`` of the head surface under face-unit points ``(K, 2)`` (0 at the silhouette)."""
    x = points[:, 0] / 1.04
    return 0.8 * np.sqrt(np.clip(1.0 - x * x, 0.0, 1.0))


def _resample(curve: np.ndarray, count: int) -> np.ndarray:
    """``count`` points equally spaced by arc length along a polyline ``(M, 2)``."""
    steps = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    where = np.linspace(0.0, arc[-1], count)
    return np.stack([np.interp(where, arc, curve[:, 0]), np.interp(where, arc, curve[:, 1])], axis=1)


class FaceModel:
    """Landmarks of one identity for any :class:`FaceState`, and the projection to frame pixels.

    Args:
        identity: the face parameters.
        size: frame side in pixels.
    """

    def __init__(self, identity: Identity, size: int) -> None:
        self.identity = identity
        self.size = size
        self.unit = identity.face_scale * size
        """Pixels per face unit at pose scale 1."""
        ident = identity
        self.chin_y = ident.face_height
        self.skull_top = -ident.forehead_height
        self.nose_tip_y = ident.nose_length
        self.subnasale_y = ident.nose_length + 0.1
        # The line where the closed lips meet, kept clear of the nose and the chin.
        self.mouth_y = min(self.subnasale_y + 0.14 + ident.upper_lip, self.chin_y - ident.lower_lip - 0.24)
        self.jaw_rest = self._jaw_contour()
        centre_units = (self.skull_top + self.chin_y) / 2
        self.origin = np.array([0.5 * size, HEAD_CENTRE_Y * size - centre_units * self.unit])
        """Frame pixel position of the face-unit origin at the neutral pose."""

    def _jaw_contour(self) -> np.ndarray:
        """Rest jaw points 0-16 ``(17, 2)``: a superellipse from ear to chin, arc-length sampled."""
        ident = self.identity
        exponent = 2.0 + 1.6 * (1.0 - ident.jaw_roundness)
        theta = np.linspace(0.0, np.pi / 2, 200)
        s, c = np.sin(theta), np.cos(theta)
        x = c ** (2.0 / exponent) * (1.0 - (0.3 - 0.16 * ident.chin_width) * s**3)
        y = EAR_LEVEL + (self.chin_y - EAR_LEVEL) * s ** (2.0 / exponent)
        right_half = np.stack([x, y], axis=1)  # image-right half: ear (x=1) → chin (x=0)
        left_half = right_half * np.array([-1.0, 1.0])  # image-left ear → chin
        contour = np.concatenate([left_half, right_half[::-1][1:]])  # image-left ear → chin → right ear
        return _resample(contour, 17)

    # ------------------------------------------------------------------ landmarks in face units
    def mouth_shape(self, articulation: tuple[float, ...] | np.ndarray) -> dict[str, float]:
        """Mouth measures in face units: half-widths, lip lines and the jaw drop."""
        ident = self.identity
        jaw = float(articulation[JAW_OPEN])
        spread = float(articulation[LIP_SPREAD])
        rnd = float(articulation[LIP_ROUND])
        closure = float(articulation[LIP_CLOSURE])
        drop = JAW_DROP * jaw
        opening = drop * (1.0 - closure)
        meet = self.mouth_y + 0.4 * drop * closure
        half_width = ident.mouth_width * (1.0 + 0.16 * spread - 0.32 * rnd) * (1.0 - 0.08 * jaw)
        return {
            "drop": drop,
            "opening": opening,
            "half_width": half_width,
            "inner_half_width": half_width * (0.93 - 0.45 * rnd),
            "upper_inner": meet - 0.12 * opening,
            "lower_inner": meet + 0.85 * opening,
            "corner": meet + 0.1 * opening,
            "upper_outer": meet - 0.12 * opening - ident.upper_lip * (1.0 + 0.25 * rnd - 0.2 * spread),
            "lower_outer": meet + 0.85 * opening + ident.lower_lip * (1.0 + 0.25 * rnd - 0.2 * spread),
            "round": rnd,
        }

    def landmarks_units(self, state: FaceState) -> tuple[np.ndarray, np.ndarray]:
        """The 68 landmarks of ``state`` in face units, before the head pose.

        Returns:
            ``(68, 2)`` points and ``(68,)`` depths.
        """
        ident = self.identity
        points = np.zeros((NUM_LANDMARKS, 2))
        extra_depth = np.zeros(NUM_LANDMARKS)
        art = np.asarray(state.articulation, dtype=np.float64)
        mouth = self.mouth_shape(art)
        # Jaw: 4-12 drop with the jaw (slightly narrowing), 0-3 and 13-16 stay.
        jaw = self.jaw_rest.copy()
        jaw[:, 1] += _JAW_WEIGHTS * mouth["drop"]
        jaw[:, 0] *= 1.0 - 0.05 * float(art[JAW_OPEN]) * _JAW_WEIGHTS
        points[0:17] = jaw
        # Brows 17-21 (image left, outer → inner) and 22-26 (inner → outer).
        t = np.linspace(0.0, 1.0, 5)
        if ident.brow_shape == "arched":
            profile = 0.07 * np.sin(np.pi * t)
        elif ident.brow_shape == "angled":
            profile = 0.08 * (1.0 - np.abs(t - 0.35) / 0.65) - 0.02
        else:
            profile = 0.02 * t
        inner_x = ident.eye_spacing - 0.9 * ident.eye_width
        outer_x = ident.eye_spacing + 1.2 * ident.eye_width
        brow_x = outer_x + (inner_x - outer_x) * t
        brow_y = -ident.brow_height - 0.06 * state.brow_raise - profile + 0.03 * t
        points[17:22] = np.stack([-brow_x, brow_y], axis=1)
        points[22:27] = np.stack([brow_x[::-1], brow_y[::-1]], axis=1)
        extra_depth[17:27] = 0.05
        # Nose: bridge 27-30, nostrils 31-35.
        length = self.nose_tip_y
        points[27:31] = [[0.0, -0.02], [0.0, 0.31 * length], [0.0, 0.64 * length], [0.0, length]]
        extra_depth[27:31] = (0.05, 0.14, 0.24, 0.34)
        nw = ident.nose_width
        nostril_y = self.subnasale_y
        points[31:36] = [
            [-nw, nostril_y - 0.04],
            [-0.5 * nw, nostril_y - 0.005],
            [0.0, nostril_y],
            [0.5 * nw, nostril_y - 0.005],
            [nw, nostril_y - 0.04],
        ]
        extra_depth[31:36] = (0.1, 0.16, 0.2, 0.16, 0.1)
        # Eyes 36-41 (image left: outer, upper ×2, inner, lower ×2) and 42-47 (inner, upper ×2, outer, lower ×2).
        openness = float(np.clip(state.eye_open, 0.0, 1.0))
        for first, side in ((36, -1.0), (42, 1.0)):
            cx, ew, eh = side * ident.eye_spacing, ident.eye_width, ident.eye_height
            lower = 0.45 * eh * (1.0 - 0.3 * (1.0 - openness))
            upper = -eh * openness + lower * 0.8 * (1.0 - openness)
            outer = [cx + side * ew, -ident.eye_tilt]
            inner = [cx - side * 0.95 * ew, 0.01]
            up_out, up_in = [cx + side * ew / 3, upper], [cx - side * ew / 3, upper + 0.01]
            lo_out, lo_in = [cx + side * ew / 3, lower], [cx - side * ew / 3, lower]
            if side < 0:
                points[first : first + 6] = [outer, up_out, up_in, inner, lo_in, lo_out]
            else:
                points[first : first + 6] = [inner, up_in, up_out, outer, lo_out, lo_in]
        extra_depth[36:48] = -0.06
        # Mouth: outer 48-59 and inner 60-67.
        hw, ihw = mouth["half_width"], mouth["inner_half_width"]
        up_o, lo_o, up_i, lo_i, corner = (
            mouth["upper_outer"],
            mouth["lower_outer"],
            mouth["upper_inner"],
            mouth["lower_inner"],
            mouth["corner"],
        )
        side_in = 0.25 - 0.12 * mouth["round"]
        points[48:60] = [
            [-hw, corner],
            [-0.62 * hw, corner + 0.55 * (up_o - corner)],
            [-0.25 * hw, up_o - 0.012],
            [0.0, up_o + 0.012],
            [0.25 * hw, up_o - 0.012],
            [0.62 * hw, corner + 0.55 * (up_o - corner)],
            [hw, corner],
            [0.62 * hw, corner + 0.78 * (lo_o - corner)],
            [0.28 * hw, lo_o - 0.008],
            [0.0, lo_o],
            [-0.28 * hw, lo_o - 0.008],
            [-0.62 * hw, corner + 0.78 * (lo_o - corner)],
        ]
        points[60:68] = [
            [-ihw, corner],
            [-0.45 * ihw, up_i + side_in * (corner - up_i)],
            [0.0, up_i],
            [0.45 * ihw, up_i + side_in * (corner - up_i)],
            [ihw, corner],
            [0.45 * ihw, lo_i - side_in * 1.2 * (lo_i - corner)],
            [0.0, lo_i],
            [-0.45 * ihw, lo_i - side_in * 1.2 * (lo_i - corner)],
        ]
        extra_depth[48:68] = 0.08 + 0.08 * mouth["round"]
        return points, head_depth(points) + extra_depth

    # ------------------------------------------------------------------ projection
    def project(self, points: np.ndarray, depth: np.ndarray | None, pose: HeadPose) -> np.ndarray:
        """Face-unit points ``(K, 2)`` with depths ``(K,)`` → frame pixels ``(K, 2)`` float64.

        Applies yaw and pitch (about the face-unit origin), then roll, scale and translation.
        ``depth=None`` uses :func:`head_depth`.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        z = head_depth(points) if depth is None else np.asarray(depth, dtype=np.float64)
        yaw, pitch, roll = (math.radians(a) for a in (pose.yaw, pose.pitch, pose.roll))
        x = points[:, 0] * math.cos(yaw) + z * math.sin(yaw)
        z1 = -points[:, 0] * math.sin(yaw) + z * math.cos(yaw)
        y = points[:, 1] * math.cos(pitch) + z1 * math.sin(pitch)
        cos_r, sin_r = math.cos(roll), math.sin(roll)
        xr, yr = x * cos_r - y * sin_r, x * sin_r + y * cos_r
        scale = self.unit * pose.scale
        offset = self.origin + np.array([pose.tx, pose.ty]) * self.size
        return np.stack([xr * scale + offset[0], yr * scale + offset[1]], axis=1)

    def landmarks(self, state: FaceState) -> np.ndarray:
        """The 68 landmarks of ``state`` in frame pixels, ``(68, 2)`` float32 (x, y)."""
        points, depth = self.landmarks_units(state)
        return self.project(points, depth, state.pose).astype(np.float32)
