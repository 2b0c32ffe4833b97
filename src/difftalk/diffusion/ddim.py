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

import torch

from difftalk.diffusion.sampling import DenoiseFn, StepCallback, make_scheduler, randn, sample_masked

__all__ = ["DenoiseFn", "StepCallback", "randn", "sample_ddim"]


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
    """Masked-z_T DDIM from ``initial_noise`` (x_T) to x_0: :func:`sample_masked` with diffusers' DDIM
    configured as LDM's (:func:`make_scheduler` ``"ddim"``). Arguments as in :func:`sample_masked`;
    ``alphas_cumprod``: ``(T,)`` ᾱ of the training schedule."""
    return sample_masked(
        denoise,
        initial_noise,
        scheduler=make_scheduler("ddim", alphas_cumprod),
        num_steps=num_steps,
        eta=eta,
        mouth_mask=mouth_mask,
        known_latents=known_latents,
        blend_final=blend_final,
        generator=generator,
        shared_noise=shared_noise,
        progress=progress,
        callback=callback,
    )
