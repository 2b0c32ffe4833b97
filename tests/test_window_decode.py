"""Decoding only a latent window (``models.window_decode``) matches a full decode where it is used, and the
pipeline's ``decode_window`` changes the output only inside the pasted region, and only slightly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difftalk.config import load_config, replace
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.window_decode import decode_recording_norms, decode_window, supports_window_decode
from difftalk.pipeline.generate import mask_box, pixel_window, union_box

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def autoencoder() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(load_config("tiny").model.autoencoder).eval()


def _latents(seed: int, size: int = 16) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_recording_decode_is_the_plain_decode_and_a_whole_window_reproduces_it(autoencoder):
    latents = _latents(0)
    frames, stats = decode_recording_norms(autoencoder, latents)
    torch.testing.assert_close(frames, autoencoder.decode(latents), rtol=0, atol=0)
    assert stats.shape[0] == 2 and stats.shape[2] == 2 and torch.all(stats[..., 1] >= 0)
    whole = decode_window(autoencoder, latents, stats, (0, 16, 0, 16), margin=0)
    torch.testing.assert_close(whole, frames, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_a_window_with_a_margin_matches_the_full_decode_and_without_one_it_does_not(autoencoder):
    latents = _latents(1)
    frames, stats = decode_recording_norms(autoencoder, latents)
    window = (8, 16, 3, 12)
    factor = frames.shape[-1] // 16
    inside = frames[:, :, 8 * factor : 16 * factor, 3 * factor : 12 * factor]
    errors = {m: (decode_window(autoencoder, latents, stats, window, m) - inside).abs().max() for m in (0, 4, 16)}
    assert errors[16] < 1e-4  # the margin reaches the map's edges: the same computation
    assert errors[4] < errors[0] and errors[0] > 1e-2  # the zero border is felt without a margin
    # with the statistics of other latents that differ only inside the window, the window is still close
    generated = latents.clone()
    generated[:, :, 8:, 3:12] += 0.5 * _latents(2)[:, :, 8:, 3:12]
    full = autoencoder.decode(generated)[:, :, 8 * factor :, 3 * factor : 12 * factor]
    approx = decode_window(autoencoder, generated, stats, window, 16)
    assert (approx - full).abs().mean() < 0.1 * (full - inside).abs().mean()


def test_bad_windows_and_statistics_are_refused_and_attention_in_the_up_path_is_not_supported(autoencoder):
    latents = _latents(3)
    _, stats = decode_recording_norms(autoencoder, latents)
    with pytest.raises(ValueError, match=r"window .* outside the 16×16 latent map"):
        decode_window(autoencoder, latents, stats, (4, 20, 0, 8), margin=1)
    with pytest.raises(ValueError, match=r"norm_stats .* do not fit"):
        decode_window(autoencoder, latents, stats[:1], (4, 8, 0, 8), margin=1)
    assert supports_window_decode(autoencoder)
    attention = replace(load_config("tiny").model.autoencoder, {"attention_levels": [False, False, True]})
    assert not supports_window_decode(Autoencoder(attention))


def test_the_pixel_window_covers_every_used_pixel_in_whole_latent_cells():
    weight = np.zeros((64, 64), np.float32)
    weight[40:50, 10:20] = 0.5
    assert mask_box(weight) == (40, 50, 10, 20) and mask_box(np.zeros((64, 64))) is None
    assert union_box([(40, 50, 10, 20), None, (45, 64, 30, 33)]) == (40, 64, 10, 33) and union_box([None]) is None
    assert pixel_window((40, 64, 10, 33), 64, 16) == (10, 16, 2, 9)
