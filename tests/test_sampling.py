"""The one masked sampler over diffusers' schedulers: DDIM as LDM's, every sampler's masking and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difftalk.diffusion import SAMPLERS
from difftalk.diffusion.sampling import betas_from_alphas_cumprod, make_scheduler, randn, sample_masked
from difftalk.diffusion.schedule import add_noise, ddim_alphas, ddim_timesteps, make_alphas_cumprod
from difftalk.pipeline.base import GeneratedMouth, TemporalBlend

PAPER = ("scaled_linear", 1000, 0.0015, 0.0195)


def _oracle(target: torch.Tensor, ac: torch.Tensor):
    """A perfect ε-predictor for data concentrated on ``target``."""

    def denoise(latents, timesteps):
        a = ac[timesteps].float().view(-1, 1, 1, 1)
        return (latents - a.sqrt() * target) / (1 - a).sqrt()

    return denoise


def _reference_masked_ddim(denoise, noise, ac, steps, mask, known, generator):
    """LDM's masked DDIM (η = 0) written out from the paper's equations: the oracle the library rule must match."""
    timesteps = ddim_timesteps(ac.shape[0], steps)
    alphas, alphas_prev = ddim_alphas(ac, timesteps)
    latents = noise
    for index, t in enumerate(timesteps):
        t_batch = t.expand(latents.shape[0])
        renoised = add_noise(known, randn(tuple(latents.shape), generator, "cpu"), t_batch, ac)
        latents = mask * latents + (1 - mask) * renoised
        eps = denoise(latents, t_batch)
        a, a_prev = float(alphas[index]), float(alphas_prev[index])
        clean = (latents - math.sqrt(1 - a) * eps) / math.sqrt(a)
        latents = math.sqrt(a_prev) * clean + math.sqrt(1 - a_prev) * eps
    return mask * latents + (1 - mask) * known


def test_betas_round_trip_to_the_training_schedule():
    ac = make_alphas_cumprod(*PAPER)
    scheduler = make_scheduler("ddim", ac)
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), ac, rtol=2e-6, atol=0)
    assert betas_from_alphas_cumprod(ac).min() > 0


def test_library_ddim_matches_ldm_ddim_with_masking():
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(0)
    known, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 3:, 1:7] = 1.0

    def denoise(latents, timesteps):  # a nonlinear denoiser, so errors in the rule would show
        return 0.5 * _oracle(target, ac)(latents, timesteps) + 0.1 * torch.tanh(latents)

    noise = torch.randn(2, 3, 8, 8, generator=g)
    ours = sample_masked(
        denoise,
        noise,
        scheduler=make_scheduler("ddim", ac),
        num_steps=20,
        mouth_mask=mask,
        known_latents=known,
        generator=torch.Generator().manual_seed(5),
    )
    expected = _reference_masked_ddim(denoise, noise, ac, 20, mask, known, torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=2e-5)  # float32 ᾱ in diffusers vs float64


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_recovers_the_target_inside_and_keeps_the_known_outside(name):
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(1)
    known, target = torch.randn(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, 2:6] = 1.0
    steps = 4 if name == "lcm" else 12
    out = sample_masked(
        _oracle(target, ac),
        randn((1, 3, 8, 8), g, "cpu"),
        scheduler=make_scheduler(name, ac),
        num_steps=steps,
        mouth_mask=mask,
        known_latents=known,
        generator=g,
    )
    inside, outside = mask.bool().expand_as(out), ~mask.bool().expand_as(out)
    assert torch.equal(out[outside], known[outside])
    # DDIM ends at ᾱ_0 (LDM), keeping sqrt(1 − ᾱ_0) ≈ 0.039 of predicted noise; the others end at x_0.
    assert (out[inside] - target[inside]).abs().max() < (0.16 if name == "ddim" else 0.02)


@pytest.mark.parametrize("name", ["ddim", "lcm"])
def test_shared_noise_gives_identical_items_identical_outputs_for_stochastic_samplers(name):
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(6)
    known = torch.randn(1, 3, 8, 8, generator=g).expand(3, -1, -1, -1)
    z_t = randn((1, 3, 8, 8), g, "cpu").expand(3, -1, -1, -1)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, 2:6] = 1.0

    def run(shared: bool) -> torch.Tensor:
        return sample_masked(
            lambda latents, t: torch.tanh(latents) + latents.mean(dim=(1, 2, 3), keepdim=True),
            z_t,
            scheduler=make_scheduler(name, ac),
            num_steps=4,
            eta=1.0,
            mouth_mask=mask,
            known_latents=known,
            generator=torch.Generator().manual_seed(0),
            shared_noise=shared,
        )

    shared, independent = run(True), run(False)
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[1], shared[2])
    assert not torch.allclose(independent[0], independent[1])
    assert torch.equal(run(True), shared)  # and the same seed gives the same draws


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_z0_predicting_denoiser_samples_its_prediction_with_prediction_type_sample(name):
    """A one-step ``direct`` student predicts z_0: with ``prediction_type="sample"`` every sampler lands on it
    (inside the mask; outside, the known latents), and read as noise it would not."""
    ac = make_alphas_cumprod(*PAPER)
    g = torch.Generator().manual_seed(3)
    known, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, 2:6] = 1.0

    def run(**overrides: str) -> torch.Tensor:
        return sample_masked(
            lambda latents, t: target,
            randn((2, 3, 8, 8), torch.Generator().manual_seed(0), "cpu"),
            scheduler=make_scheduler(name, ac, **overrides),
            num_steps=1 if name == "lcm" else 4,
            mouth_mask=mask,
            known_latents=known,
            generator=torch.Generator().manual_seed(1),
        )

    wanted = mask * target + (1 - mask) * known
    sampled = run(prediction_type="sample")
    assert (sampled - wanted).abs().max() < (0.2 if name == "ddim" else 1e-4)  # LDM's DDIM ends on ᾱ_0, not 1
    assert (run() - wanted).abs().max() > 1


def test_a_scheduler_is_refused_for_unknown_names_and_bad_step_counts():
    ac = make_alphas_cumprod(*PAPER)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_scheduler("euler", ac)
    with pytest.raises(ValueError, match="num_steps must be in"):
        sample_masked(lambda x, t: x, torch.zeros(1, 3, 4, 4), scheduler=make_scheduler("ddim", ac), num_steps=0)


def _mouth(value: int) -> GeneratedMouth:
    crop = np.full((2, 2, 3), value, dtype=np.uint8)
    return GeneratedMouth(crop, np.ones((2, 2), np.float32), np.zeros(4, np.float32))


def _times(ready: list) -> list[int]:
    return [r.t for r in ready]


def test_temporal_blend_hands_frames_on_as_soon_as_they_are_final():
    blend = TemporalBlend(0.25)
    assert _times(blend.push(0, _mouth(100))) == [0]  # nothing before it: not blended, no wait for frame 1
    assert blend.push(1, _mouth(200)) == []  # waits for its right neighbour
    second = blend.push(2, None)  # frame 2 has no face: frame 1 is final unblended, frame 2 passes through
    assert _times(second) == [1, 2]
    assert int(second[0].mouth.crop[0, 0, 0]) == 200 and second[1].mouth is None
    assert _times(blend.push(3, _mouth(40))) == [3]
    assert blend.push(4, _mouth(80)) == []
    out = blend.push(5, _mouth(160))
    assert _times(out) == [4]
    assert int(out[0].mouth.crop[0, 0, 0]) == round(0.5 * 80 + 0.25 * (40 + 160))
    assert _times(blend.flush()) == [5]
    off = TemporalBlend(0.0)
    assert _times(off.push(0, _mouth(1))) == [0] and _times(off.push(1, _mouth(2))) == [1]


def test_step_warnings_say_what_too_few_steps_do(caplog):
    """Too few steps on a plain model: noise; fewer steps than a student was distilled for: a smeared mouth;
    fewer than recommended otherwise: blurrier; the recommended count or more: no warning."""
    from difftalk.pipeline.options import check_num_steps

    def warning(steps: int, recommended: int, distilled: bool) -> str:
        caplog.clear()
        check_num_steps(steps, recommended, distilled)
        return " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")

    assert "noise" in warning(2, 25, False)
    assert "smeared" in warning(1, 4, True) and "noise" not in warning(1, 4, True)
    assert "smeared" in warning(2, 4, True) and "--steps 4" in warning(2, 4, True)
    assert "blurrier" in warning(10, 25, False) and "blurrier" not in warning(2, 4, True)
    assert warning(4, 4, True) == warning(25, 25, False) == warning(50, 25, False) == ""
    with pytest.raises(ValueError, match="must be >= 1"):
        check_num_steps(0, 4, True)
