"""The one masked sampler: diffusers' scheduler update rules over a denoise callable (stage ⑤).

``sample_masked`` runs any scheduler of :data:`SAMPLERS` (DDIM, DPM-Solver++, UniPC, LCM) from z_T to
z_0 around a ``denoise(latents, timesteps) -> predicted noise`` function: the model wraps its
conditions in a closure, so this module knows nothing about networks (it never imports ``models/``).
The update rules are diffusers'; what is ours is the loop around them:

- **masked z_T** (DiffTalk §3.3, LDM inpainting): only the mouth region is generated. Before every
  step the latent outside ``mouth_mask`` is replaced by the known latent noised to the current t with
  fresh noise (so z_T itself is masked); inside the mask the sampler's own latent is kept;
- **shared noise**: every random draw (z_T aside, which the caller gives) made once per step for the
  whole batch, so that batch items with the same inputs get the same output (less flicker);
- one ``generator`` for every draw, drawn on the generator's device, so a seed gives the same video
  on any device.

A scheduler object holds per-run state (step index, a multistep solver's history): build a fresh one
for every call with :func:`make_scheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from difftalk.diffusion import DISTILLED_ONLY, SAMPLERS

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoise(latents (B, C, h, w), timesteps (B,) long) -> predicted noise (B, C, h, w)`` (or predicted z_0 with a
scheduler made with ``prediction_type="sample"``)."""

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""``callback(step_index, timestep, latents, predicted_clean)`` after every step."""

__all__ = ["DISTILLED_ONLY", "SAMPLERS", "DenoiseFn", "StepCallback", "make_scheduler", "randn", "sample_masked"]


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


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """β_t = 1 − ᾱ_t / ᾱ_{t−1} (β_0 = 1 − ᾱ_0): the schedule a scheduler is built from, ``(T,)`` float64."""
    ac = alphas_cumprod.detach().double().cpu()
    return 1.0 - ac / torch.cat([ac.new_ones(1), ac[:-1]])


def make_scheduler(name: str, alphas_cumprod: torch.Tensor, **overrides: Any) -> Any:
    """A fresh diffusers scheduler for ``name`` on the training schedule ``alphas_cumprod`` ``(T,)``.

    ``ddim`` is configured as LDM's DDIM (``leading`` spacing with offset 1: for T = 1000 and 200 steps
    996, 991, …, 1; the last step lands on ᾱ_0), which the official DiffTalk sampler uses. ``overrides``
    go to the scheduler's constructor (``lcm``: ``original_inference_steps`` of the distillation;
    ``prediction_type="sample"`` for a denoiser that predicts z_0 instead of the noise, as a one-step
    ``direct`` student does).

    Raises:
        ValueError: an unknown ``name``.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler, UniPCMultistepScheduler

    common: dict[str, Any] = {
        "num_train_timesteps": int(alphas_cumprod.shape[0]),
        "trained_betas": betas_from_alphas_cumprod(alphas_cumprod).numpy(),
        "prediction_type": "epsilon",
    }
    if name == "ddim":
        settings = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}
        return DDIMScheduler(**{**common, **settings, **overrides})
    if name == "dpmpp":
        return DPMSolverMultistepScheduler(
            **{**common, "algorithm_type": "dpmsolver++", "solver_order": 2, **overrides}
        )
    if name == "unipc":
        return UniPCMultistepScheduler(**{**common, **overrides})
    if name == "lcm":
        return LCMScheduler(**{**common, "clip_sample": False, "set_alpha_to_one": False, **overrides})
    raise ValueError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def _step_generator(
    generator: torch.Generator | None, batch: int, shared: bool
) -> torch.Generator | list[torch.Generator] | None:
    """The generator(s) a scheduler step draws with: ``generator``, or (shared noise) ``batch`` generators
    in one state drawn from it, so that every batch item gets the same draw."""
    if not shared:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator else "cpu"))
    device = generator.device if generator is not None else torch.device("cpu")
    return [torch.Generator(device).manual_seed(seed) for _ in range(batch)]


def sample_masked(
    denoise: DenoiseFn,
    initial_noise: torch.Tensor,
    *,
    scheduler: Any,
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
    """Sample z_0 from ``initial_noise`` (z_T) with ``scheduler``'s update rule, generating only the mask.

    Args:
        denoise: ε-prediction callable, see :data:`DenoiseFn`.
        initial_noise: ``(B, C, h, w)`` z_T ~ N(0, I) (draw it with :func:`randn` and a generator).
        scheduler: a fresh scheduler from :func:`make_scheduler` (it keeps state; do not reuse it).
        num_steps: sampling steps (denoiser calls).
        eta: DDIM η (0: deterministic); ignored by the other samplers.
        mouth_mask: optional ``(B or 1, 1, h, w)`` float in [0, 1]: 1 = generate, 0 = keep ``known_latents``.
        known_latents: ``(B, C, h, w)`` latents of the known frame; required with ``mouth_mask``.
        blend_final: after the last step, put ``known_latents`` back exactly outside the mask.
        generator: source of every random draw (re-noising, η noise, LCM's noise); same seed → same output.
        shared_noise: make every draw once per step for the whole batch, so that batch items with the
            same inputs get the same output.
        progress: show a progress bar over the steps.
        callback: called after every step, see :data:`StepCallback`.

    Returns:
        ``(B, C, h, w)`` sampled latents z_0.
    """
    if (mouth_mask is None) != (known_latents is None):
        raise ValueError("mouth_mask and known_latents must be given together")
    if known_latents is not None and known_latents.shape != initial_noise.shape:
        raise ValueError(
            f"known_latents {tuple(known_latents.shape)} must match initial_noise {tuple(initial_noise.shape)}"
        )
    total = int(scheduler.config.num_train_timesteps)
    if not 1 <= num_steps <= total:
        raise ValueError(f"num_steps must be in [1, {total}], got {num_steps}")
    scheduler.set_timesteps(num_steps)
    device, dtype, batch = initial_noise.device, initial_noise.dtype, initial_noise.shape[0]
    latents = initial_noise * scheduler.init_noise_sigma
    noise_shape = (1, *latents.shape[1:]) if shared_noise else tuple(latents.shape)
    accepts = _step_parameters(scheduler)
    step_kwargs: dict[str, Any] = {"eta": eta} if "eta" in accepts else {}
    draws = "generator" in accepts and (eta > 0 or "eta" not in accepts)  # DDIM draws only with η > 0
    timesteps = scheduler.timesteps
    for index in tqdm(range(len(timesteps)), desc="sampling", disable=not progress, leave=False):
        t = timesteps[index]
        t_batch = t.to(device=device, dtype=torch.long).expand(batch)
        if mouth_mask is not None and known_latents is not None:
            fresh = randn(noise_shape, generator, device, dtype).expand_as(known_latents)
            renoised = scheduler.add_noise(known_latents, fresh, t.reshape(1).expand(batch))
            latents = mouth_mask * latents + (1 - mouth_mask) * renoised.to(dtype)
        noise_pred = denoise(scheduler.scale_model_input(latents, t), t_batch)
        if draws:
            step_kwargs["generator"] = _step_generator(generator, batch, shared_noise)
        output = scheduler.step(noise_pred, t, latents, **step_kwargs)
        previous = latents
        latents = output.prev_sample.to(dtype)
        if callback is not None:
            clean = getattr(output, "pred_original_sample", None)
            if clean is None:
                clean = getattr(output, "denoised", None)
            if clean is None:
                a = scheduler.alphas_cumprod[int(t)].to(device=device, dtype=dtype)
                clean = (previous - (1 - a).sqrt() * noise_pred) / a.sqrt()
            callback(index, int(t), latents, clean)
    if blend_final and mouth_mask is not None and known_latents is not None:
        latents = mouth_mask * latents + (1 - mouth_mask) * known_latents
    return latents


def _step_parameters(scheduler: Any) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(scheduler.step).parameters)
