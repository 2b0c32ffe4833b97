"""Noise schedules and the closed-form forward process.

Stage ⑤. Notation (DDPM / DDIM papers; DiffTalk Eq. 1-3): β_t the variance schedule, α_t = 1 − β_t,
ᾱ_t = ∏ α_s (``alphas_cumprod``). The forward process is
``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε`` (:func:`add_noise`). LDM's "linear" schedule, which
DiffTalk uses (0.0015 → 0.0195, T = 1000), is linear in sqrt(β): diffusers calls it ``scaled_linear``.
This module never imports ``models/``.
"""

from __future__ import annotations

import math

import torch


def make_betas(kind: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_1..β_T as a float64 tensor of shape ``(T,)``.

    Args:
        kind: ``scaled_linear`` (LDM "linear": ``linspace(sqrt(b0), sqrt(b1), T) ** 2``), ``linear``
            (``linspace(b0, b1, T)``) or ``cosine`` (Nichol & Dhariwal 2021, s = 0.008, β ≤ 0.999).
        num_train_timesteps: T.
        beta_start: first β (linear kinds).
        beta_end: last β (linear kinds).
    """
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if kind == "cosine":
        steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {kind!r}; use scaled_linear, linear or cosine")


def make_alphas_cumprod(kind: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 as float64 ``(T,)``."""
    return torch.cumprod(1.0 - make_betas(kind, num_train_timesteps, beta_start, beta_end), dim=0)


def _gather(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[timesteps]`` broadcast to ``like``'s rank, in ``like``'s dtype and device."""
    out = values.to(like.device)[timesteps.to(like.device)].to(like.dtype)
    return out.view(-1, *([1] * (like.ndim - 1)))


def add_noise(
    clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Sample q(x_t | x_0): ``sqrt(ᾱ_t) * clean + sqrt(1 − ᾱ_t) * noise``.

    Args:
        clean: ``(B, ...)`` x_0.
        noise: ε, same shape as ``clean``.
        timesteps: ``(B,)`` or scalar long tensor of t ∈ [0, T).
        alphas_cumprod: ``(T,)`` ᾱ.
    """
    timesteps = timesteps.reshape(-1).expand(clean.shape[0])
    a = _gather(alphas_cumprod, timesteps, clean)
    return a.sqrt() * clean + (1 - a).sqrt() * noise


def predict_clean(
    noisy: torch.Tensor, noise_pred: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)."""
    timesteps = timesteps.reshape(-1).expand(noisy.shape[0])
    a = _gather(alphas_cumprod, timesteps, noisy)
    return (noisy - (1 - a).sqrt() * noise_pred) / a.sqrt()


def ddim_timesteps(num_train_timesteps: int, num_steps: int) -> torch.Tensor:
    """LDM's "uniform" DDIM timesteps, descending: ``range(0, T, T // n) + 1`` reversed.

    For T = 1000 and n = 200 this is 996, 991, …, 6, 1, exactly as the official DiffTalk sampler. The
    +1 offset is dropped when the stride is 1 (n = T), where it would step past T − 1.

    Raises:
        ValueError: if ``num_steps`` is not in [1, T].
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    stride = num_train_timesteps // num_steps
    offset = 1 if stride > 1 else 0
    steps = torch.arange(0, num_train_timesteps, stride, dtype=torch.long)[:num_steps] + offset
    return steps.flip(0)


def ddim_alphas(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ᾱ at each DDIM timestep, ᾱ of the step it jumps to), LDM convention: the last step jumps to ᾱ_0.

    Args:
        alphas_cumprod: ``(T,)`` ᾱ.
        timesteps: descending ``(n,)`` DDIM timesteps from :func:`ddim_timesteps`.
    """
    alphas = alphas_cumprod[timesteps]
    previous = torch.cat([alphas_cumprod[timesteps[1:]], alphas_cumprod[:1]])
    return alphas, previous
