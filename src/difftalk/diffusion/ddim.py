"""DDIM sampling over a denoise callable, with masked-z_T inpainting.

Stage ⑤. ``sample_ddim`` takes any ``denoise(latents, timesteps) -> predicted noise`` function (the
model wraps its conditions in a closure), so the sampler knows nothing about networks. Notation
follows DDIM (Song et al. 2021, Eq. 12): with ᾱ_t and ᾱ_prev,

    x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)
    σ_t = η sqrt((1 − ᾱ_prev) / (1 − ᾱ_t)) sqrt(1 − ᾱ_t / ᾱ_prev)
    x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 − ᾱ_prev − σ_t²) ε̂ + σ_t z.

Masked z_T (DiffTalk §3.3, LDM inpainting): only the mouth region is generated. Before every step
the latent outside ``mouth_mask`` is replaced by the known latent noised to the current t with fresh
noise (so z_T itself is masked); inside the mask the sampler's own latent is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from difftalk.diffusion.schedule import add_noise, ddim_alphas, ddim_timesteps

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoise(latents (B, C, h, w), timesteps (B,) long) -> predicted noise (B, C, h, w)``."""

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""``callback(step_index, timestep, latents, predicted_clean)`` after every step."""


def randn(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``.

    Drawing on the generator's device makes results identical across target devices for a seed.
    """
    gen_device = generator.device if generator is not None else torch.device(device)
    noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def ddim_step(
    latents: torch.Tensor,
    noise_pred: torch.Tensor,
    alpha: float,
    alpha_prev: float,
    eta: float,
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update x_t → x_prev.

    Args:
        latents: ``(B, C, h, w)`` x_t.
        noise_pred: ε̂ for x_t.
        alpha: ᾱ_t.
        alpha_prev: ᾱ of the target step.
        eta: η; 0 is deterministic.
        noise: fresh N(0, I) of the latents' shape; needed only when ``eta > 0``.

    Returns:
        ``(x_prev, x̂_0)``.
    """
    clean = (latents - math.sqrt(1 - alpha) * noise_pred) / math.sqrt(alpha)
    sigma = eta * math.sqrt((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev))
    direction = math.sqrt(max(1 - alpha_prev - sigma**2, 0.0)) * noise_pred
    previous = math.sqrt(alpha_prev) * clean + direction
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step needs noise when eta > 0")
        previous = previous + sigma * noise
    return previous, clean


def sample_ddim(
    denoise: DenoiseFn,
    initial_noise: torch.Tensor,
    *,
    alphas_cumprod: torch.Tensor,
    num_steps: int,
    eta: float = 0.0,
    mouth_mask: torch.Tensor | None = None,
    known_latents: torch.Tensor | None = None,
    blend_final: bool = True,
    generator: torch.Generator | None = None,
    shared_noise: bool = False,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM from ``initial_noise`` (x_T) to x_0.

    Args:
        denoise: ε-prediction callable, see :data:`DenoiseFn`.
        initial_noise: ``(B, C, h, w)`` x_T ~ N(0, I) (draw it with :func:`randn` and a generator).
        alphas_cumprod: ``(T,)`` ᾱ of the training schedule.
        num_steps: DDIM steps n (LDM "uniform" spacing, see ``ddim_timesteps``).
        eta: DDIM η.
        mouth_mask: optional ``(B or 1, 1, h, w)`` float in [0, 1]: 1 = generate, 0 = keep ``known_latents``.
        known_latents: ``(B, C, h, w)`` latents of the known frame; required with ``mouth_mask``.
        blend_final: after the last step, put ``known_latents`` back exactly outside the mask.
        generator: source of every random draw (re-noising and η noise); same seed → same output.
        shared_noise: draw the re-noising and η noise once per step for the whole batch (``(1, C, h, w)``,
            broadcast), so that batch items with the same inputs get the same output.
        progress: show a progress bar over the steps.
        callback: called after every step, see :data:`StepCallback`.

    Returns:
        ``(B, C, h, w)`` sampled latents x_0.
    """
    if (mouth_mask is None) != (known_latents is None):
        raise ValueError("mouth_mask and known_latents must be given together")
    if known_latents is not None and known_latents.shape != initial_noise.shape:
        raise ValueError(
            f"known_latents {tuple(known_latents.shape)} must match initial_noise {tuple(initial_noise.shape)}"
        )
    timesteps = ddim_timesteps(alphas_cumprod.shape[0], num_steps)
    alphas, alphas_prev = ddim_alphas(alphas_cumprod, timesteps)
    latents = initial_noise
    device, dtype, batch = latents.device, latents.dtype, latents.shape[0]
    noise_shape = (1, *latents.shape[1:]) if shared_noise else tuple(latents.shape)
    for index in tqdm(range(len(timesteps)), desc="DDIM", disable=not progress, leave=False):
        t = timesteps[index]
        t_batch = t.to(device).expand(batch)
        if mouth_mask is not None and known_latents is not None:
            renoised = add_noise(known_latents, randn(noise_shape, generator, device, dtype), t_batch, alphas_cumprod)
            latents = mouth_mask * latents + (1 - mouth_mask) * renoised
        noise_pred = denoise(latents, t_batch)
        step_noise = randn(noise_shape, generator, device, dtype) if eta > 0 else None
        latents, clean = ddim_step(
            latents, noise_pred, float(alphas[index]), float(alphas_prev[index]), eta, step_noise
        )
        if callback is not None:
            callback(index, int(t), latents, clean)
    if blend_final and mouth_mask is not None and known_latents is not None:
        latents = mouth_mask * latents + (1 - mouth_mask) * known_latents
    return latents
