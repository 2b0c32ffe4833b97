"""PatchGAN discriminator for the optional adversarial term of autoencoder training (taming/LDM style)."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """``(B, 3, H, W)`` in [-1, 1] → ``(B, 1, h, w)`` real/fake logits per patch.

    GroupNorm instead of BatchNorm so it behaves the same under DDP and at batch size 1.
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [nn.Conv2d(width, out, 4, stride=stride, padding=1), nn.GroupNorm(8, out), nn.LeakyReLU(0.2)]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)
