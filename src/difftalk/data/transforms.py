"""Conversions at the array/tensor boundary: uint8 HWC images ↔ float CHW tensors in [-1, 1].

Stage ③. Everything inside the models works on float CHW in [-1, 1]; files hold uint8 HWC RGB.
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` RGB → float ``(3, H, W)`` / ``(N, 3, H, W)`` in [-1, 1]."""
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (..., H, W, 3), got {images.dtype} {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)
    return tensor.movedim(-1, -3)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float ``(3, H, W)`` / ``(N, 3, H, W)`` in [-1, 1] → uint8 ``(H, W, 3)`` / ``(N, H, W, 3)``."""
    if frames.ndim not in (3, 4) or frames.shape[-3] != 3:
        raise ValueError(f"expected frames (..., 3, H, W), got {tuple(frames.shape)}")
    array = frames.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return array.movedim(-3, -1).cpu().numpy()
