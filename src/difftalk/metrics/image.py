"""Image quality against ground truth: PSNR, SSIM and LPIPS, on the whole crop and on the mouth region.

Stage ⑦. Inputs are uint8 ``(H, W, 3)`` RGB face crops of the generated and the ground-truth frame,
cut with the same crop box. Definitions (per frame, then averaged over frames):

* ``PSNR = 10 · log10(255² / MSE)``, MSE over all pixels and channels; ``inf`` for identical images.
* ``SSIM``: scikit-image ``structural_similarity`` (7×7 uniform window, K1 = 0.01, K2 = 0.03,
  data range 255), averaged over the three channels; 1 for identical images.
* ``LPIPS`` (v0.1, AlexNet; :mod:`difftalk.metrics.lpips`) on images in [-1, 1]; 0 for identical images.
  Only with the real weights; otherwise it is reported as unavailable (never faked).
* ``*_mouth``: the same on the mouth region ``mouth_box(landmarks)`` (nose tip to the bottom of the crop,
  between the upper-jaw points; :mod:`difftalk.data.masks`), the region DiffTalk regenerates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity

from difftalk.metrics.lpips import LPIPS, lpips_distance

LPIPS_MIN_SIDE = 64
"""Regions smaller than this are upsampled before LPIPS (AlexNet's receptive field needs room)."""


def _check_pair(generated: np.ndarray, truth: np.ndarray) -> None:
    if generated.shape != truth.shape or generated.ndim != 3 or generated.shape[-1] != 3:
        raise ValueError(f"expected two (H, W, 3) images of one shape, got {generated.shape} and {truth.shape}")


def psnr(generated: np.ndarray, truth: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB of two ``(H, W, 3)`` images (``inf`` when identical)."""
    _check_pair(generated, truth)
    mse = float(np.mean((generated.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(generated: np.ndarray, truth: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM in [-1, 1] of two ``(H, W, 3)`` images (skimage defaults; 1 when identical)."""
    _check_pair(generated, truth)
    side = min(generated.shape[:2])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        raise ValueError(f"SSIM needs images of at least 3×3 pixels, got {generated.shape[:2]}")
    return float(structural_similarity(generated, truth, channel_axis=-1, data_range=data_range, win_size=window))


def to_signed_tensor(images: Sequence[np.ndarray] | np.ndarray, min_side: int = 0) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` → float ``(B, 3, H', W')`` in [-1, 1], upsampled so that min(H', W') ≥ ``min_side``."""
    array = np.stack(list(images)).astype(np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2)
    side = min(tensor.shape[-2:])
    if min_side and side < min_side:
        scale = min_side / side
        size = (math.ceil(tensor.shape[-2] * scale), math.ceil(tensor.shape[-1] * scale))
        tensor = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return tensor


def lpips_batch(model: LPIPS, generated: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> list[float]:
    """LPIPS of pairs of same-sized uint8 ``(H, W, 3)`` images (lower is more similar)."""
    if not len(generated):
        return []
    device = next(model.parameters()).device
    a = to_signed_tensor(generated, LPIPS_MIN_SIDE).to(device)
    b = to_signed_tensor(truth, LPIPS_MIN_SIDE).to(device)
    return [float(v) for v in lpips_distance(model, a, b).cpu()]


def crop_region(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[top:bottom, left:right]`` for a ``mouth_box`` ``(top, bottom, left, right)``."""
    top, bottom, left, right = box
    return image[top:bottom, left:right]


IMAGE_METRICS = ("psnr", "ssim", "lpips", "psnr_mouth", "ssim_mouth", "lpips_mouth")


@dataclass
class ImageQuality:
    """Per-frame image metrics accumulated over a clip; :meth:`means` gives the clip's numbers."""

    lpips_model: LPIPS | None = None
    values: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in IMAGE_METRICS})

    def add(
        self,
        generated: Sequence[np.ndarray],
        truth: Sequence[np.ndarray],
        mouth_boxes: Sequence[tuple[int, int, int, int]],
    ) -> None:
        """Add a window of frames: uint8 ``(H, W, 3)`` generated and ground-truth crops and their mouth boxes."""
        if not len(generated) == len(truth) == len(mouth_boxes):
            raise ValueError("generated, truth and mouth_boxes must have the same length")
        mouths_g = [crop_region(g, box) for g, box in zip(generated, mouth_boxes, strict=True)]
        mouths_t = [crop_region(t, box) for t, box in zip(truth, mouth_boxes, strict=True)]
        for g, t, mg, mt in zip(generated, truth, mouths_g, mouths_t, strict=True):
            self.values["psnr"].append(psnr(g, t))
            self.values["ssim"].append(ssim(g, t))
            self.values["psnr_mouth"].append(psnr(mg, mt))
            self.values["ssim_mouth"].append(ssim(mg, mt))
        if self.lpips_model is not None:
            self.values["lpips"].extend(lpips_batch(self.lpips_model, generated, truth))
            for mg, mt in zip(mouths_g, mouths_t, strict=True):  # mouth boxes differ in size per frame
                self.values["lpips_mouth"].extend(lpips_batch(self.lpips_model, [mg], [mt]))

    def means(self) -> dict[str, float | None]:
        """Mean of each metric over the frames added (None when not computed, e.g. LPIPS without weights)."""
        return {name: (float(np.mean(v)) if v else None) for name, v in self.values.items()}
