"""Square face crops: the crop box from landmarks, cropping, and the maps between frame and crop.

Stage ②. The box is computed from the *mouth-free* landmarks only (brows, eyes, nose, upper jaw),
so the framing of a crop never moves with the jaw: otherwise crop position itself would leak the
mouth opening into the reference and masked conditions. Boxes are squares ``(x0, y0, x1, y1)`` in
frame pixels; a crop of side S maps the box linearly onto ``[0, S]²``. Parts of a box outside the
frame are filled by replicating the border.
"""

from __future__ import annotations

import cv2
import numpy as np

from difftalk.preprocess.landmarks import CONDITION_POINTS, NOSE_TIP, NUM_LANDMARKS

BOX_SCALE = 1.55
"""Crop side as a multiple of the face width at ear level (upper-jaw points 0 and 16)."""
BOX_SHIFT = 0.12
"""Downward shift of the box centre from the nose tip, as a fraction of the side (room for the chin)."""


def crop_box(landmarks: np.ndarray, scale: float = BOX_SCALE, shift: float = BOX_SHIFT) -> np.ndarray:
    """Square crop box ``[x0, y0, x1, y1]`` float32 around a face, from its mouth-free landmarks.

    Args:
        landmarks: ``(68, 2)`` frame pixel coordinates.
        scale: side / face width.
        shift: centre offset below the nose tip, as a fraction of the side.
    """
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {landmarks.shape}")
    points = landmarks[list(CONDITION_POINTS)]
    width = float(points[:, 0].max() - points[:, 0].min())
    height = float(points[:, 1].max() - points[:, 1].min())
    side = scale * max(width, 1.25 * height, 1.0)
    cx = float(points[:, 0].min() + points[:, 0].max()) / 2
    cy = float(landmarks[NOSE_TIP, 1]) + shift * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)


def _affine(box: np.ndarray, size: int) -> np.ndarray:
    """2×3 matrix mapping frame pixels to crop pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = size / max(x1 - x0, 1e-6), size / max(y1 - y0, 1e-6)
    return np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]], dtype=np.float64)


def crop_image(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut ``box`` out of ``image`` (uint8 ``(H, W, 3)``) and resize it to ``(size, size, 3)``.

    Sub-pixel exact (an affine warp); when shrinking by more than 1.5× the region is low-pass
    filtered first so the crop does not alias.
    """
    box = np.asarray(box, dtype=np.float64)
    downscale = (box[2] - box[0]) / size
    if downscale <= 1.5:
        return cv2.warpAffine(
            image, _affine(box, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    # Work on the region of interest only (plus a margin for the filter), padded by replication.
    margin = int(np.ceil(2 * downscale))
    x0, y0 = int(np.floor(box[0])) - margin, int(np.floor(box[1])) - margin
    x1, y1 = int(np.ceil(box[2])) + margin, int(np.ceil(box[3])) + margin
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    source = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    region = source[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    sigma = 0.5 * (downscale - 1.0)
    region = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma)
    local = box - np.array([x0, y0, x0, y0], dtype=np.float64)
    return cv2.warpAffine(
        region, _affine(local, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def frame_to_crop(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Map frame pixel coordinates ``(..., 2)`` into the crop of ``box`` at ``size``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = np.array([size / (x1 - x0), size / (y1 - y0)], dtype=np.float32)
    return ((np.asarray(points, dtype=np.float32) - np.array([x0, y0], dtype=np.float32)) * scale).astype(np.float32)


def crop_to_frame(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`frame_to_crop`."""
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = np.array([(x1 - x0) / size, (y1 - y0) / size], dtype=np.float32)
    return (np.asarray(points, dtype=np.float32) * scale + np.array([x0, y0], dtype=np.float32)).astype(np.float32)
