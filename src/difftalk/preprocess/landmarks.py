"""Named subsets of the 68-point iBUG landmark layout and their normalisation to the crop.

Stage ②. Indices are 0-based (iBUG 300-W / dlib / face_alignment order). DiffTalk conditions on the
points that carry no mouth shape: the upper jaw near the ears, brows, nose and eyes (the official
subset 0-3 and 13-47, 39 points). Every other module uses these names, never raw slices.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 68
JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSE_TIP = 30
NOSE_BOTTOM = tuple(range(31, 36))
SUBNASALE = 33
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
MOUTH = OUTER_LIPS + INNER_LIPS
LOWER_JAW = tuple(range(4, 13))
"""Chin and lower jaw: they move with the mouth, so they are never a condition."""
UPPER_JAW_RIGHT = (0, 1, 2, 3)
UPPER_JAW_LEFT = (13, 14, 15, 16)
CONDITION_POINTS = UPPER_JAW_RIGHT + tuple(range(13, 48))
"""The 39 mouth-free points fed to the landmark encoder (official subset 0-3, 13-47)."""
CHIN = 8
PASTE_JAW_LINE = tuple(range(2, 15))
"""The jaw line from cheek to cheek (iBUG 2-14): with the bottom of the nose it bounds the pasted lower face."""

assert len(CONDITION_POINTS) == 39
assert not set(CONDITION_POINTS) & set(MOUTH + LOWER_JAW)


def normalise_landmarks(points: np.ndarray, crop_size: int) -> np.ndarray:
    """Crop pixel coordinates ``(..., 2)`` → [-1, 1] (``x / crop_size * 2 - 1``), float32."""
    return (np.asarray(points, dtype=np.float32) / float(crop_size)) * 2.0 - 1.0


def condition_landmarks(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """The mouth-free subset ``(..., 39, 2)`` of ``(..., 68, 2)`` crop landmarks, normalised to [-1, 1]."""
    if landmarks.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got {landmarks.shape}")
    return normalise_landmarks(landmarks[..., list(CONDITION_POINTS), :], crop_size)
