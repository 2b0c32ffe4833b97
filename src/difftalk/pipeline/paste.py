"""Soft paste-back of a generated face crop into the full frame (stage ⑥).

Only the lower face is replaced. :func:`paste_weight` (the one paste weight of every generator) is
the mouth mask of ``data.masks`` (the region the model inpainted, a rectangle down to the crop's
bottom edge) cut to the face: inside the jaw line and below the nose, so the neck, the clothes and
the background are never touched, feathered *inwards*, so every pixel outside that region is left
bit-for-bit untouched and the seam inside it is soft. The lips always get the full weight.
"""

from __future__ import annotations

import cv2
import numpy as np

from difftalk.data.masks import mouth_mask
from difftalk.preprocess.landmarks import NOSE_BOTTOM, NUM_LANDMARKS, OUTER_LIPS, PASTE_JAW_LINE

LIP_MARGIN = 0.03
"""The lips are dilated by this fraction of the crop size and always belong to the pasted region."""

JAW_TRAVEL = 0.06
"""The jaw line of the frame being dubbed is lowered by this fraction of the crop size before it bounds the
pasted region: the generated mouth may open wider than the original one, and its chin must not be cut at
the original chin (nor may the region's edge follow the original jaw's movement into the output)."""

_SHIFT = 4
"""Fractional bits of the polygon vertices given to OpenCV (sub-pixel rasterisation)."""


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


def _fill(polygon: np.ndarray, crop_size: int) -> np.ndarray:
    """uint8 ``(S, S)``: 1 inside the polygon ``(K, 2)`` of crop pixel coordinates."""
    image = np.zeros((crop_size, crop_size), np.uint8)
    vertices = np.round(polygon * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(image, [vertices], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return image


def paste_weight(landmarks: np.ndarray, crop_size: int, feather: float) -> np.ndarray:
    """The paste-back weight of one crop: the lower face only, soft at its edge, the lips at 1.

    The region is the mouth mask of ``data.masks`` intersected with the polygon of the jaw line
    (iBUG 2-14, lowered by ``JAW_TRAVEL`` · S for a wider-opening generated mouth) closed under the nose
    (31-35), joined with the outer lips dilated by ``LIP_MARGIN`` · S
    (an upper lip touching the nose line stays inside; the jaw line itself is not widened, so nothing
    below it is ever touched). Inside it the weight rises with the distance d to its edge,
    ``smoothstep((d - 1) / w)`` (the outermost pixel ring is 0, so the bilinear warp into the frame does not
    spill past the region), where w is ``feather`` · S but at most the lips' distance to the edge, so the
    whole mouth is pasted at full weight.

    Args:
        landmarks: ``(68, 2)`` crop pixel coordinates (x, y) of the frame the crop is pasted into.
        crop_size: side S of the square crop in pixels.
        feather: width of the soft edge as a fraction of ``crop_size`` (``GenerateOptions.feather``;
            0 = hard edge).

    Returns:
        ``(S, S)`` float32 in [0, 1]: 0 outside the region (below the jaw line, outside the face,
        above the bottom of the nose, outside the mouth mask), 1 on the lips.
    """
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {landmarks.shape}")
    points = landmarks.astype(np.float64)
    lips = _fill(points[list(OUTER_LIPS)], crop_size)
    radius = max(1, round(LIP_MARGIN * crop_size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    jaw = points[list(PASTE_JAW_LINE)] + np.array([0.0, JAW_TRAVEL * crop_size])
    lower_face = _fill(np.concatenate([jaw, points[list(NOSE_BOTTOM)[::-1]]]), crop_size)
    face = np.maximum(lower_face, cv2.dilate(lips, kernel))
    region = (face * (mouth_mask(landmarks, crop_size) > 0)).astype(np.uint8)
    if feather <= 0 or not region.any():
        return region.astype(np.float32)
    # Distance to the nearest pixel outside the region (the crop's border counts as outside), minus one: the
    # outermost ring of the rasterised region gets 0, so the bilinear warp into the frame stays inside it.
    inside = cv2.distanceTransform(np.pad(region, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1] - 1.0
    on_lips = inside[(lips > 0) & (region > 0)]
    width = feather * crop_size
    width = max(1.0, min(width, float(on_lips.min()) if on_lips.size else width))
    ramp = np.clip(inside / width, 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)


def paste_back(frame: np.ndarray, crop: np.ndarray, box: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend ``crop`` (placed at ``box``) into a copy of ``frame`` with per-pixel ``weight``.

    Args:
        frame: uint8 ``(H, W, 3)`` full frame.
        crop: uint8 ``(S, S, 3)`` generated crop of ``box``.
        box: ``[x0, y0, x1, y1]`` square crop box in frame pixels (may extend past the frame).
        weight: float ``(S, S)`` in [0, 1] (:func:`paste_weight`).

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
