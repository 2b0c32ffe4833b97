"""The mouth mask: ONE function, used by training (masked target) and inference (masked z_T, paste-back).

Stage ③. The region to regenerate is a rectangle from the nose tip (iBUG 30) down to the bottom of
the crop, spanning the face between the upper-jaw points (1-3 and 13-15) plus a margin. It is built
from mouth-free landmarks only, so its shape carries no lip or jaw-opening information (the leak
the official inference mask had: its polygon followed the ground-truth jaw), and it covers the
whole mouth and chin however wide the mouth opens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from difftalk.preprocess.landmarks import NOSE_TIP, NUM_LANDMARKS

MARGIN = 0.06
"""Horizontal margin around the jaw points, as a fraction of the crop size."""

_LEFT_POINTS = [1, 2, 3]
_RIGHT_POINTS = [13, 14, 15]


def mouth_box(landmarks: np.ndarray, crop_size: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` pixel bounds (end-exclusive) of the mouth region of one crop.

    Args:
        landmarks: ``(68, 2)`` crop pixel coordinates (x, y) of the target frame.
        crop_size: side of the square crop in pixels.
    """
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {landmarks.shape}")
    margin = MARGIN * crop_size
    top = int(np.floor(landmarks[NOSE_TIP, 1]))
    left = int(np.floor(landmarks[_LEFT_POINTS, 0].min() - margin))
    right = int(np.ceil(landmarks[_RIGHT_POINTS, 0].max() + margin))
    top = min(max(top, 0), crop_size - 1)
    left = min(max(left, 0), crop_size - 1)
    right = min(max(right, left + 1), crop_size)
    return top, crop_size, left, right


def mouth_mask(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """Binary mask ``(crop_size, crop_size)`` float32: 1 = regenerate (mouth region), 0 = keep."""
    top, bottom, left, right = mouth_box(landmarks, crop_size)
    mask = np.zeros((crop_size, crop_size), dtype=np.float32)
    mask[top:bottom, left:right] = 1.0
    return mask


def apply_mask(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked target: ``frames`` ``(B, 3, S, S)`` in [-1, 1] with the mask region set to -1 (black).

    Args:
        frames: ``(B, 3, S, S)`` or ``(3, S, S)``.
        mask: ``(B, 1, S, S)`` or ``(1, S, S)``, 1 = masked.
    """
    return frames * (1 - mask) - mask


def latent_mask(mask: torch.Tensor, latent_size: int) -> torch.Tensor:
    """Pixel mask ``(B, 1, S, S)`` → latent mask ``(B, 1, s, s)``: a latent cell is generated if any of
    its pixels is (max pooling), so the latent mask always covers the pixel mask."""
    return F.adaptive_max_pool2d(mask, latent_size)
