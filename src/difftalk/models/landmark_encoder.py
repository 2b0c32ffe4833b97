"""Landmark encoder E_L: MLP over the mouth-free landmark subset → l ∈ R^D.

Stage ④. Input ``landmarks`` are the upper-face points of the target frame (the official subset:
iBUG points 0-3 and 13-47, mouth and lower jaw removed so no lip shape leaks), normalised to the
crop as ``(x, y) / crop_size * 2 - 1`` ∈ [-1, 1] (the official code fed raw 256-px coordinates).
"""

from __future__ import annotations

import torch
from torch import nn

from difftalk.config import LandmarkEncoderConfig

_LEAK = 0.02


class LandmarkEncoder(nn.Module):
    """``landmarks (B, P, 2)`` in [-1, 1] → ``(B, D)`` (official LdmNet: 78 → 128 → 64 → 64, LeakyReLU)."""

    def __init__(self, config: LandmarkEncoderConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = 2 * config.num_points
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(_LEAK)]
            width = hidden
        layers.append(nn.Linear(width, config.output_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, P, 2)`` normalised landmarks to ``(B, D)``."""
        if landmarks.ndim != 3 or landmarks.shape[1:] != (self.config.num_points, 2):
            raise ValueError(
                f"landmarks must have shape (B, {self.config.num_points}, 2), got {tuple(landmarks.shape)}"
            )
        return self.mlp(landmarks.flatten(1))
