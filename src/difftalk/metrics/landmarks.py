"""Mouth landmark distance (LMD) between generated and ground-truth face crops, with dlib landmarks.

Stage ⑦. Both crops of a frame (cut with the same crop box) go through dlib's 68-point shape
predictor, seeded with the same face rectangle — the bounding box of the clip's stored landmarks of
that frame — so a difference comes from the pixels alone. With ``p̂_tk`` and ``p_tk`` the detected
mouth points (iBUG 48–67) of the generated and the ground-truth crop of frame t:

* ``LMD_px = mean_t mean_k ‖p̂_tk − p_tk‖₂`` in crop pixels,
* ``LMD = mean_t (mean_k ‖p̂_tk − p_tk‖₂ / d_t)`` with ``d_t`` the outer-eye-corner distance (points 36,
  45) of the ground-truth detection: a scale-free fraction of the inter-ocular distance.

Identical crops give exactly 0. Needs the optional ``difftalk[face]`` extra (dlib); without it LMD is
reported as unavailable. Licence: dlib's 68-point model is for non-commercial use only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from difftalk.preprocess.landmarks import MOUTH, NUM_LANDMARKS

logger = logging.getLogger(__name__)

RIGHT_EYE_OUTER = 36
LEFT_EYE_OUTER = 45


def face_rectangle(landmarks: np.ndarray) -> np.ndarray:
    """Detector-style box ``(4,)`` float32 ``x0, y0, x1, y1``: the bounding box of ``(68, 2)`` landmarks."""
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {landmarks.shape}")
    return np.array(
        [landmarks[:, 0].min(), landmarks[:, 1].min(), landmarks[:, 0].max() + 1, landmarks[:, 1].max() + 1],
        dtype=np.float32,
    )


class MouthLandmarker:
    """dlib's 68-point predictor on face crops, upsampled so their side is at least ``min_side``.

    Raises:
        ImportError: dlib / face-recognition-models are not installed (``difftalk[face]``).
    """

    def __init__(self, min_side: int = 128) -> None:
        from difftalk.preprocess.face import FaceAnalyzer

        self._analyzer = FaceAnalyzer()
        self.min_side = min_side

    def __call__(self, crop: np.ndarray, rectangle: np.ndarray) -> np.ndarray:
        """``(68, 2)`` float32 landmarks (crop pixels) of a uint8 ``(S, S, 3)`` crop inside ``rectangle``."""
        scale = max(1.0, self.min_side / min(crop.shape[:2]))
        if scale > 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        points = self._analyzer.landmarks(crop, np.asarray(rectangle, dtype=np.float32) * scale)
        return (points / scale).astype(np.float32)


def load_landmarker(min_side: int = 128) -> MouthLandmarker | None:
    """A :class:`MouthLandmarker`, or None (logged) when dlib is not installed."""
    try:
        return MouthLandmarker(min_side)
    except (ImportError, FileNotFoundError) as exc:
        logger.info("LMD unavailable: %s", exc)
        return None


def mouth_distance(generated: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(pixels, fraction of inter-ocular distance) mean mouth-point distance of one frame's ``(68, 2)`` sets."""
    distance = float(np.linalg.norm(generated[list(MOUTH)] - truth[list(MOUTH)], axis=1).mean())
    interocular = float(np.linalg.norm(truth[RIGHT_EYE_OUTER] - truth[LEFT_EYE_OUTER]))
    return distance, distance / max(interocular, 1e-6)


@dataclass
class LandmarkDistance:
    """LMD accumulated over the frames of a clip."""

    landmarker: MouthLandmarker
    pixels: list[float] = field(default_factory=list)
    normalised: list[float] = field(default_factory=list)

    def add(
        self, generated: Sequence[np.ndarray], truth: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]
    ) -> None:
        """Add frames: uint8 ``(S, S, 3)`` crops and the clip's stored ``(68, 2)`` landmarks of each frame."""
        for g, t, points in zip(generated, truth, landmarks, strict=True):
            rectangle = face_rectangle(np.asarray(points, dtype=np.float32))
            pixels, fraction = mouth_distance(self.landmarker(g, rectangle), self.landmarker(t, rectangle))
            self.pixels.append(pixels)
            self.normalised.append(fraction)

    def means(self) -> dict[str, float | None]:
        """``lmd`` (fraction of the inter-ocular distance) and ``lmd_px`` (crop pixels)."""
        if not self.pixels:
            return {"lmd": None, "lmd_px": None}
        return {"lmd": float(np.mean(self.normalised)), "lmd_px": float(np.mean(self.pixels))}
