"""Soft paste-back of a generated face crop into the full frame (stage ⑥).

Only the mouth region is replaced: the blend weight is the mouth mask of ``data.masks`` (the same
mask the model inpainted), feathered *inwards*, so every pixel outside the mouth region is left
bit-for-bit untouched and the seam inside it is invisible.
"""

from __future__ import annotations

import cv2
import numpy as np


def feathered_mask(mask: np.ndarray, feather: float) -> np.ndarray:
    """A soft version of a binary ``(S, S)`` mask that is 0 wherever ``mask`` is 0.

    Args:
        mask: ``(S, S)`` float {0, 1}.
        feather: width of the soft edge in pixels (0 = hard edge).
    """
    mask = mask.astype(np.float32)
    if feather <= 0:
        return mask
    radius = max(1, round(feather))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Pad with the mask's own border so a region touching the crop edge is not eroded there.
    padded = cv2.copyMakeBorder(mask, radius, radius, radius, radius, cv2.BORDER_REPLICATE)
    inner = cv2.erode(padded, kernel)[radius:-radius, radius:-radius]
    soft = cv2.GaussianBlur(inner, (0, 0), sigmaX=feather / 2)
    return np.minimum(soft, mask)


def paste_back(frame: np.ndarray, crop: np.ndarray, box: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend ``crop`` (placed at ``box``) into a copy of ``frame`` with per-pixel ``weight``.

    Args:
        frame: uint8 ``(H, W, 3)`` full frame.
        crop: uint8 ``(S, S, 3)`` generated crop of ``box``.
        box: ``[x0, y0, x1, y1]`` square crop box in frame pixels (may extend past the frame).
        weight: float ``(S, S)`` in [0, 1] (:func:`feathered_mask`).

    Returns:
        uint8 ``(H, W, 3)``; pixels where the warped weight is 0 are identical to ``frame``.
    """
    size = crop.shape[0]
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = (x1 - x0) / size
    rx0, ry0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    rx1, ry1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    out = frame.copy()
    if rx1 <= rx0 or ry1 <= ry0:
        return out
    matrix = np.array([[scale, 0.0, x0 - rx0], [0.0, (y1 - y0) / size, y0 - ry0]], dtype=np.float64)
    shape = (rx1 - rx0, ry1 - ry0)
    warped = cv2.warpAffine(crop, matrix, shape, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(weight.astype(np.float32), matrix, shape, flags=cv2.INTER_LINEAR, borderValue=0.0)
    region = out[ry0:ry1, rx0:rx1]
    inside = alpha > 0
    if not inside.any():
        return out
    a = alpha[inside][:, None]
    blended = region[inside].astype(np.float32) * (1 - a) + warped[inside].astype(np.float32) * a
    region[inside] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
