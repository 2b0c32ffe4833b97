"""The UNet's mouth window (``model.unet_window``): where it lies, what fills the rest, that a window covering the
whole map changes nothing, that training and sampling use it, and that the pipeline runs the UNet on it."""

from __future__ import annotations

import pytest
import torch

from difftalk.config import ConfigError, load_config, replace
from difftalk.diffusion.schedule import add_noise
from difftalk.models.difftalk import DiffTalkModel
from difftalk.models.unet_window import known_prediction, mouth_window

pytestmark = pytest.mark.usefixtures("one_thread")


def _mask(batch: int, size: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    mask = torch.zeros(batch, 1, size, size)
    for index, (r0, r1, c0, c1) in enumerate(boxes):
        mask[index, :, r0:r1, c0:c1] = 1
    return mask


def test_the_window_holds_every_mask_grown_by_the_margin_in_multiples_inside_the_map():
    # the synthetic benchmark's mask on a 32² map: rows 12-31, columns 3-28
    mask = _mask(1, 32, [(12, 32, 3, 29)])
    assert mouth_window(mask, margin=0, multiple=4) == (12, 32, 2, 30)  # 20 × 26 → 20 × 28, centred
    assert mouth_window(mask, margin=1, multiple=4) == (8, 32, 2, 30)  # 21 rows → 24, pushed back inside
    assert mouth_window(mask, margin=1, multiple=1) == (11, 32, 2, 30)
    # the union over the batch
    two = _mask(2, 32, [(12, 20, 4, 8), (16, 24, 20, 26)])
    assert mouth_window(two, margin=0, multiple=4) == (12, 24, 3, 27)  # columns 4-25 → 24, centred
    # nothing generated, or a map the UNet cannot halve: the whole map
    assert mouth_window(torch.zeros(2, 1, 32, 32), margin=1, multiple=4) == (0, 32, 0, 32)
    assert mouth_window(_mask(1, 30, [(12, 20, 4, 8)]), margin=0, multiple=4) == (0, 30, 0, 30)
    assert mouth_window(_mask(1, 32, [(0, 32, 0, 32)]), margin=3, multiple=4) == (0, 32, 0, 32)
    with pytest.raises(ValueError, match="margin"):
        mouth_window(mask, margin=-1, multiple=4)


def test_the_known_prediction_is_the_noise_that_made_z_t_or_z_0_itself():
    generator = torch.Generator().manual_seed(0)
    alphas = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    clean = torch.randn(3, 3, 8, 8, generator=generator)
    noise = torch.randn(3, 3, 8, 8, generator=generator)
    steps = torch.tensor([0, 400, 999])
    noisy = add_noise(clean, noise, steps, alphas)
    assert torch.allclose(known_prediction(noisy, steps, clean, alphas, "epsilon"), noise, atol=1e-4)
    assert torch.equal(known_prediction(noisy, steps, clean, alphas, "sample"), clean)
    with pytest.raises(ValueError, match="prediction"):
        known_prediction(noisy, steps, clean, alphas, "v_prediction")  # type: ignore[arg-type]


def _models(margin: int) -> tuple[DiffTalkModel, DiffTalkModel]:
    """The tiny model without and with a UNet window, same weights, every block random, z_masked in latent space."""
    torch.manual_seed(0)
    base = replace(load_config("tiny").model, {"unet.zero_init": False, "masked_target": "latent"})
    plain = DiffTalkModel(base).eval()
    windowed = DiffTalkModel(replace(base, {"unet_window": margin})).eval()
    windowed.load_state_dict(plain.state_dict(), strict=True)
    return plain, windowed


def test_the_unet_runs_on_the_window_and_the_rest_is_what_the_known_latents_imply(make_conditions):
    plain, windowed = _models(margin=1)
    _, conditions = make_conditions(plain, batch=2)
    mask = _mask(2, 16, [(8, 16, 3, 13), (9, 16, 4, 12)])
    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    steps = torch.tensor([10, 700])
    window = windowed.unet_window(mask)
    assert window == (6, 16, 2, 14)  # rows 8-15 and columns 3-12 grown by 1 cell, even sides (2 UNet levels)
    seen: list[tuple[int, ...]] = []
    windowed.unet.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        for prediction in ("epsilon", "sample"):
            out = windowed.predict_noise(latents, steps, conditions, mouth_mask=mask, prediction=prediction)
            assert seen.pop() == (2, 9, 10, 12)
            r0, r1, c0, c1 = window
            inside = windowed.unet(
                windowed.unet_input(latents, conditions)[:, :, r0:r1, c0:c1],
                steps,
                encoder_hidden_states=windowed.encode_context(conditions.audio_features, conditions.landmarks),
            ).sample
            assert torch.allclose(out[:, :, r0:r1, c0:c1], inside, atol=1e-5)
            known = known_prediction(latents, steps, conditions.masked_latents, windowed.alphas_cumprod, prediction)
            outside = torch.ones(16, 16, dtype=torch.bool)
            outside[r0:r1, c0:c1] = False
            assert torch.equal(out[:, :, outside], known[:, :, outside])
        # no mask, no window: the whole map, as the plain model
        assert torch.equal(
            windowed.predict_noise(latents, steps, conditions), plain.predict_noise(latents, steps, conditions)
        )
        # a window that covers the whole map is the plain model exactly
        full = _mask(2, 16, [(0, 16, 0, 16), (0, 16, 0, 16)])
        assert torch.allclose(
            windowed.predict_noise(latents, steps, conditions, mouth_mask=full),
            plain.predict_noise(latents, steps, conditions),
            atol=1e-6,
        )
        # the guided denoiser (2B rows) runs on the same window
        guided = windowed.make_denoiser(conditions, audio_guidance=2.0, mouth_mask=mask)
        assert guided(latents, steps).shape == latents.shape and seen.pop() == (4, 9, 10, 12)


def test_training_on_the_window_learns_only_inside_it(make_conditions):
    _, windowed = _models(margin=0)
    windowed.train()
    frames, conditions = make_conditions(windowed, batch=2)
    clean = windowed.encode_frames(frames)
    mask = _mask(2, 16, [(8, 16, 4, 12), (8, 16, 4, 12)])
    conditions.masked_latents = windowed.masked_target_latents(clean, mask)
    with pytest.raises(ValueError, match="latent_mouth_mask"):
        windowed.training_loss(conditions=conditions, target_latents=clean)
    output = windowed.training_loss(
        conditions=conditions, target_latents=clean, latent_mouth_mask=mask, generator=torch.Generator().manual_seed(0)
    )
    output.loss.backward()
    # outside the window the noise is known exactly (z_masked is z_0 there), so there is no error to learn
    assert output.mse_outside is not None and float(output.mse_outside.max()) < 1e-8
    assert output.mse_inside is not None and float(output.mse_inside.min()) > 1e-3
    assert windowed.unet.conv_in.weight.grad is not None and windowed.unet.conv_in.weight.grad.abs().sum() > 0


def test_a_negative_window_is_a_config_error():
    with pytest.raises(ConfigError, match="unet_window"):
        replace(load_config("tiny").model, {"unet_window": -1})
