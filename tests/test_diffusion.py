"""Schedules and the DDIM sampler, checked against closed forms, LDM's DDIM and a dummy denoiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difftalk.diffusion.ddim import randn, sample_ddim
from difftalk.diffusion.schedule import (
    add_noise,
    ddim_alphas,
    ddim_timesteps,
    make_alphas_cumprod,
    make_betas,
    predict_clean,
)

PAPER = ("scaled_linear", 1000, 0.0015, 0.0195)


def test_scaled_linear_is_ldm_linear():
    betas = make_betas(*PAPER).numpy()
    expected = np.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=np.float64) ** 2  # LDM make_beta_schedule
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    assert make_betas("linear", 10, 0.1, 0.2)[-1].item() == pytest.approx(0.2)
    cosine = make_betas("cosine", 1000, 0.1, 0.2)
    assert cosine.min() > 0 and cosine.max() <= 0.999


def _ldm_ddim_reference(num_steps: int):
    """LDM's make_ddim_timesteps('uniform') and make_ddim_sampling_parameters, re-stated in numpy."""
    betas = np.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=np.float64) ** 2
    alphacums = np.cumprod(1.0 - betas)
    c = 1000 // num_steps
    steps = np.asarray(list(range(0, 1000, c))) + 1
    alphas = alphacums[steps]
    alphas_prev = np.asarray([alphacums[0], *alphacums[steps[:-1]].tolist()])
    return steps[::-1], alphas[::-1], alphas_prev[::-1]


def test_paper_ddim_200_matches_ldm():
    steps, alphas, alphas_prev = _ldm_ddim_reference(200)
    timesteps = ddim_timesteps(1000, 200)
    assert timesteps.tolist() == steps.tolist()
    assert timesteps[0].item() == 996 and timesteps[-1].item() == 1 and len(timesteps) == 200
    ours, ours_prev = ddim_alphas(make_alphas_cumprod(*PAPER), timesteps)
    np.testing.assert_allclose(ours.numpy(), alphas, rtol=1e-12)
    np.testing.assert_allclose(ours_prev.numpy(), alphas_prev, rtol=1e-12)


def test_paper_ddim_200_matches_diffusers_scheduler():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    scheduler.set_timesteps(200)
    assert scheduler.timesteps.tolist() == ddim_timesteps(1000, 200).tolist()
    np.testing.assert_allclose(
        scheduler.alphas_cumprod.double().numpy(), make_alphas_cumprod(*PAPER).numpy(), rtol=1e-5
    )


@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_any_step_count_gives_distinct_descending_timesteps(steps):
    timesteps = ddim_timesteps(1000, steps)
    assert len(timesteps) == steps
    assert (timesteps[:-1] > timesteps[1:]).all()
    assert timesteps.min() >= 0 and timesteps.max() < 1000


def test_add_noise_and_predict_clean_invert_each_other():
    g = torch.Generator().manual_seed(0)
    ac = make_alphas_cumprod(*PAPER)
    clean, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    noisy = add_noise(clean, noise, t, ac)
    a = ac[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(noisy, a.sqrt() * clean + (1 - a).sqrt() * noise)
    torch.testing.assert_close(predict_clean(noisy, noise, t, ac), clean, atol=1e-4, rtol=1e-4)


def _oracle(target: torch.Tensor, ac: torch.Tensor):
    """A perfect denoiser for data concentrated on `target`: returns the exact ε of x_t."""

    def denoise(latents, timesteps):
        a = ac[timesteps].float().view(-1, 1, 1, 1)
        return (latents - a.sqrt() * target) / (1 - a).sqrt()

    return denoise


# LDM's DDIM ends at ᾱ_0 = 0.9985 (not 1), so the output keeps sqrt(1 - ᾱ_0) ≈ 0.039 of predicted noise.
FINAL_NOISE = 4 * (1 - 0.9985) ** 0.5


def _last_clean():
    """A sampler callback that records the last predicted x̂_0."""
    record = {}

    def callback(index, timestep, latents, clean):
        record["clean"], record["timestep"] = clean.clone(), timestep

    return record, callback


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_exact_noise_prediction_recovers_the_target(eta):
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 3, 8, 8, generator=g)
    record, callback = _last_clean()
    out = sample_ddim(
        _oracle(target, ac),
        randn((2, 3, 8, 8), g, "cpu"),
        alphas_cumprod=ac,
        num_steps=20,
        eta=eta,
        generator=g,
        callback=callback,
    )
    assert record["timestep"] == 1
    torch.testing.assert_close(record["clean"], target, atol=1e-4, rtol=1e-4)
    assert (out - target).abs().max() < FINAL_NOISE


def test_masked_sampling_keeps_known_latents_outside_the_mouth():
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(2)
    known = torch.randn(1, 3, 8, 8, generator=g)
    generated = torch.randn(1, 3, 8, 8, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, 2:6] = 1.0
    seen = []

    def denoise(latents, timesteps):
        seen.append(latents.clone())
        return _oracle(generated, ac)(latents, timesteps)

    kwargs = dict(alphas_cumprod=ac, num_steps=10, mouth_mask=mask, known_latents=known)
    record, callback = _last_clean()
    out = sample_ddim(denoise, randn((1, 3, 8, 8), g, "cpu"), generator=g, callback=callback, **kwargs)
    inside, outside = mask.bool().expand_as(out), ~mask.bool().expand_as(out)
    # Outside the mask: exactly the known latents; inside: what the denoiser generates.
    assert torch.equal(out[outside], known[outside])
    torch.testing.assert_close(record["clean"][inside], generated[inside], atol=1e-4, rtol=1e-4)
    assert (out[inside] - generated[inside]).abs().max() < FINAL_NOISE
    # Masked z_T: the first UNet input outside the mask is the known latent noised to t = 996.
    a = ac[996].float()
    residual = (seen[0] - a.sqrt() * known) / (1 - a).sqrt()
    assert residual[outside].std() == pytest.approx(1.0, abs=0.35)
    assert (seen[0][outside] - known[outside]).abs().mean() > 0.3
    # Without the final blend the region outside is the sampler's own reconstruction of the known latent.
    g2 = torch.Generator().manual_seed(3)
    no_blend = sample_ddim(denoise, randn((1, 3, 8, 8), g2, "cpu"), generator=g2, blend_final=False, **kwargs)
    assert not torch.equal(no_blend[outside], known[outside])


def test_empty_mask_returns_the_known_latents_and_full_mask_ignores_them():
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(4)
    known, generated = torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    noise = randn((1, 3, 8, 8), g, "cpu")
    common = dict(alphas_cumprod=ac, num_steps=5, known_latents=known)
    out = sample_ddim(_oracle(generated, ac), noise, mouth_mask=torch.zeros(1, 1, 8, 8), **common)
    assert torch.equal(out, known)
    full = torch.ones(1, 1, 8, 8)
    a = sample_ddim(_oracle(generated, ac), noise, mouth_mask=full, **common)
    b = sample_ddim(_oracle(generated, ac), noise, mouth_mask=full, **{**common, "known_latents": known * 5})
    assert torch.equal(a, b)


def test_sampling_is_deterministic_given_a_generator():
    ac = make_alphas_cumprod(*PAPER)

    def denoise(latents, timesteps):
        return torch.tanh(latents)  # any fixed function

    def run(seed, eta):
        g = torch.Generator().manual_seed(seed)
        return sample_ddim(denoise, randn((2, 3, 4, 4), g, "cpu"), alphas_cumprod=ac, num_steps=8, eta=eta, generator=g)

    assert torch.equal(run(0, 1.0), run(0, 1.0))
    assert not torch.equal(run(0, 1.0), run(1, 1.0))
    assert torch.equal(run(5, 0.0), run(5, 0.0))


def test_mask_without_known_latents_is_an_error():
    ac = make_alphas_cumprod(*PAPER)
    with pytest.raises(ValueError, match="together"):
        sample_ddim(
            lambda x, t: x,
            torch.zeros(1, 3, 4, 4),
            alphas_cumprod=ac,
            num_steps=2,
            mouth_mask=torch.ones(1, 1, 4, 4),
        )


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_shared_noise_gives_identical_batch_items_identical_outputs(eta):
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(6)
    known = torch.randn(1, 3, 8, 8, generator=g).expand(3, -1, -1, -1)  # three frames, same inputs
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, 2:6] = 1.0
    z_t = randn((1, 3, 8, 8), g, "cpu").expand(3, -1, -1, -1)

    def run(shared: bool) -> torch.Tensor:
        return sample_ddim(
            lambda latents, t: torch.tanh(latents) + latents.mean(dim=(1, 2, 3), keepdim=True),  # mixes pixels
            z_t,
            alphas_cumprod=ac,
            num_steps=6,
            eta=eta,
            mouth_mask=mask,
            known_latents=known,
            generator=torch.Generator().manual_seed(0),
            shared_noise=shared,
        )

    shared, independent = run(True), run(False)
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[1], shared[2])
    assert not torch.allclose(independent[0], independent[1])  # the re-noising differs per item
