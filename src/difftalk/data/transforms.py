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


def augment_colours(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random colour and mirror augmentation of a batch, for autoencoder training.

    Per frame: a random permutation of the RGB channels, a per-channel gain in [0.75, 1.25] and offset
    in [-0.2, 0.2] (the result clamped to [-1, 1]), and a horizontal flip with probability 1/2. An
    autoencoder trained on a few dozen identities otherwise learns their palettes and recolours
    faces it has not seen (held-out L1 2.5× the training L1 on the synthetic benchmark).

    Args:
        frames: ``(B, 3, H, W)`` in [-1, 1].
        generator: CPU generator, the only source of randomness.

    Returns:
        ``(B, 3, H, W)`` in [-1, 1], on the frames' device and dtype.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames (B, 3, H, W), got {tuple(frames.shape)}")
    batch = frames.shape[0]
    permutation = torch.stack([torch.randperm(3, generator=generator) for _ in range(batch)])
    gain = torch.empty(batch, 3, 1, 1).uniform_(0.75, 1.25, generator=generator)
    offset = torch.empty(batch, 3, 1, 1).uniform_(-0.2, 0.2, generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    index = permutation.to(frames.device)[:, :, None, None].expand(-1, -1, *frames.shape[-2:])
    out = frames.gather(1, index) * gain.to(frames) + offset.to(frames)
    out = torch.where(flip.to(frames.device)[:, None, None, None], out.flip(-1), out)
    return out.clamp(-1, 1)
