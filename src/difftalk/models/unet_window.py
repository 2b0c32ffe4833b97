"""The UNet's mouth window: the part of the latent map the denoiser runs on when ``model.unet_window`` is set.

Stage ④. Only the mouth region is generated (masked z_T); everything outside it is known and, at every
sampling step, replaced by the known latent. A model with ``unet_window = m`` therefore runs its UNet on
the smallest window that holds every batch item's latent mouth mask grown by ``m`` cells, its sides
multiples of the UNet's downsampling factor (so the window goes through every level), and fills the
rest of its prediction with what the known latents imply (:func:`known_prediction`). For aligned face
crops the mask is the lower half of the face (rows 12–31, columns 3–28 of a 32² latent map of the
synthetic benchmark): a 1-cell window is 24 × 28 cells, 66% of the map, and the UNet takes ≈ 30% less
time a frame on a CPU. Training (``difftalk train``, ``difftalk distill``) uses the same window as
sampling, so the model learns the edge of the window it will see.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from difftalk.models.window_decode import Window

Prediction = Literal["epsilon", "sample"]
"""What a denoiser's network predicts: the noise ε (the paper's) or z_0 (a one-step ``direct`` student)."""


def _fit(start: int, end: int, size: int, multiple: int) -> tuple[int, int]:
    """``[start, end)`` clamped to ``[0, size)``, grown about its centre to a multiple of ``multiple``, kept inside."""
    start, end = max(0, start), min(size, end)
    length = min(size, math.ceil((end - start) / multiple) * multiple)
    start -= (length - (end - start)) // 2
    start = min(max(start, 0), size - length)
    return start, start + length


def mouth_window(mouth_mask: torch.Tensor, margin: int, multiple: int) -> Window:
    """The latent window ``(row0, row1, col0, col1)`` (end-exclusive) the UNet runs on for a batch.

    Args:
        mouth_mask: ``(B, 1, h, w)`` latent mouth mask, > 0 = generated.
        margin: latent cells of known context kept on every side of the union of the batch's masks.
        multiple: the window's sides are multiples of it (the UNet's downsampling factor); ``h`` and ``w``
            must be too.

    Returns:
        The window; the whole map when no cell is generated (nothing to save) or the map is not a multiple.
    """
    height, width = mouth_mask.shape[-2:]
    if margin < 0 or multiple < 1:
        raise ValueError(f"margin must be >= 0 and multiple >= 1, got {margin}, {multiple}")
    rows = torch.nonzero(mouth_mask.amax(dim=(0, 1, 3)) > 0).flatten()
    cols = torch.nonzero(mouth_mask.amax(dim=(0, 1, 2)) > 0).flatten()
    if rows.numel() == 0 or height % multiple or width % multiple:
        return 0, height, 0, width
    bounds = torch.stack([rows[0], rows[-1], cols[0], cols[-1]]).tolist()  # (one device sync)
    row0, row1 = _fit(bounds[0] - margin, bounds[1] + 1 + margin, height, multiple)
    col0, col1 = _fit(bounds[2] - margin, bounds[3] + 1 + margin, width, multiple)
    return row0, row1, col0, col1


def known_prediction(
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    known_latents: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction: Prediction,
) -> torch.Tensor:
    """What the network would predict where the clean latent is ``known_latents``: z_0 itself (``sample``), or
    the noise ε = (z_t − √ᾱ_t z_0) / √(1 − ᾱ_t) that makes z_t from it (``epsilon``). ``(B, C, h, w)``.

    Args:
        latents: ``(B, C, h, w)`` z_t.
        timesteps: ``(B,)`` t.
        known_latents: ``(B, C, h, w)`` z_0 where known (z_masked outside the mouth).
        alphas_cumprod: ``(T,)`` ᾱ of the training schedule.
        prediction: see :data:`Prediction`.
    """
    if prediction == "sample":
        return known_latents.to(latents.dtype)
    if prediction != "epsilon":
        raise ValueError(f"prediction must be 'epsilon' or 'sample', got {prediction!r}")
    alpha = alphas_cumprod.to(latents.device)[timesteps.to(latents.device)].to(torch.float32)[:, None, None, None]
    noise = (latents.float() - alpha.sqrt() * known_latents.float()) / (1 - alpha).sqrt()
    return noise.to(latents.dtype)
