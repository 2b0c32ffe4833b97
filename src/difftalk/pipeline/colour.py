"""Colour correction of generated crops for the autoencoder's own colour error (stage ⑥).

A small or briefly trained autoencoder reconstructs faces it never saw with a smooth colour cast
(the synthetic benchmark's: held-out L1 well above the training L1, mostly hue). The generated mouth
inherits that cast and shows as a tinted patch after paste-back. The cast is measured where the
truth is known — outside the mouth mask, crop minus its own reconstruction — and spread into the
mask with a normalised Gaussian (normalised convolution), then added to the generated crop. The
mouth pixels of the input are never used. With a faithful autoencoder (e.g. LDM vq-f4) the
correction is close to zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with zero padding."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(images, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(out, vertical, padding=(radius, 0), groups=channels)


def colour_correction(
    crops: torch.Tensor, reconstructions: torch.Tensor, masks: torch.Tensor, sigma: float
) -> torch.Tensor:
    """The smooth colour error of the autoencoder, filled into the mouth mask.

    Args:
        crops: ``(B, 3, S, S)`` input crops in [-1, 1].
        reconstructions: ``(B, 3, S, S)`` the autoencoder's reconstructions of ``crops``.
        masks: ``(B, 1, S, S)`` in [0, 1], 1 = mouth region (its pixels are ignored).
        sigma: Gaussian width in pixels (about a tenth of the crop).

    Returns:
        ``(B, 3, S, S)`` correction to add to decoded crops.
    """
    if crops.shape != reconstructions.shape or masks.shape[-2:] != crops.shape[-2:] or masks.shape[1] != 1:
        raise ValueError(
            f"shapes do not fit: crops {tuple(crops.shape)}, reconstructions {tuple(reconstructions.shape)}, "
            f"masks {tuple(masks.shape)}"
        )
    known = (1 - masks).to(crops.dtype)
    residual = _gaussian_blur((crops - reconstructions) * known, sigma)
    weight = _gaussian_blur(known, sigma)
    return residual / weight.clamp_min(1e-3)
