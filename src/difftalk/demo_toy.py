"""``difftalk demo --toy``: a self-contained, CPU-only run of the method on a toy face, without weights.

Draws a few frames of a cartoon face whose mouth opening follows an "audio" envelope, trains the
``tiny`` autoencoder and then the ``tiny`` diffusion model on them for a few hundred steps each, then
regenerates every mouth with masked-z_T DDIM from the audio features, the landmarks, a reference frame
and the masked frame. Writes a PNG grid (rows: ground truth | masked input | generated).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from difftalk.config import load_config
from difftalk.data.transforms import to_tensor, to_uint8
from difftalk.diffusion.ddim import randn, sample_ddim
from difftalk.io.image import save_image_grid
from difftalk.models.difftalk import DiffTalkModel

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Where the demo wrote its output and how well the mouths follow the audio."""

    grid_path: Path
    final_loss: float
    mouth_error: float
    """Mean absolute pixel error of generated vs ground-truth mouths, in [0, 2] units."""


def _toy_face(size: int, opening: float) -> np.ndarray:
    """A cartoon face (uint8 ``(size, size, 3)``) with a mouth opened by ``opening`` ∈ [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size, 3), np.float32) + np.array([0.25, 0.35, 0.55])
    face = ((xx - 0.5) / 0.32) ** 2 + ((yy - 0.5) / 0.42) ** 2 < 1
    image[face] = [0.93, 0.76, 0.62]
    for cx in (0.38, 0.62):
        image[((xx - cx) / 0.05) ** 2 + ((yy - 0.4) / 0.035) ** 2 < 1] = [0.1, 0.1, 0.15]
    mouth_h = 0.015 + 0.08 * opening
    image[((xx - 0.5) / 0.11) ** 2 + ((yy - 0.7) / mouth_h) ** 2 < 1] = [0.45, 0.05, 0.08]
    return (image * 255).astype(np.uint8)


def _fit_autoencoder(model: DiffTalkModel, frames: torch.Tensor, steps: int, progress: bool) -> float:
    """Train the (otherwise frozen) tiny autoencoder on ``frames``: L1 + codebook loss."""
    autoencoder = model.autoencoder
    autoencoder.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=2e-3)
    loss_value = float("nan")
    for _ in tqdm(range(steps), desc="demo: autoencoder", disable=not progress):
        out = autoencoder(frames)
        loss = (out.reconstruction - frames).abs().mean() + out.codebook_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
    autoencoder.requires_grad_(False).eval()
    return loss_value


def run_demo(
    out_dir: str | Path = "outputs/demo", steps: int = 400, seed: int = 0, progress: bool = True
) -> DemoResult:
    """Train the tiny models on a toy clip and regenerate its mouths; see the module docstring."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    config = load_config("tiny")
    model = DiffTalkModel(config.model)
    size = config.model.autoencoder.image_size
    audio = config.model.audio_encoder
    num_frames = 8
    openings = np.abs(np.sin(np.linspace(0, 2 * np.pi, num_frames, endpoint=False)))
    frames = to_tensor(np.stack([_toy_face(size, float(o)) for o in openings]))
    masked = frames.clone()
    masked[:, :, int(size * 0.58) :, :] = -1.0  # everything below the nose
    pattern = torch.randn(audio.window, audio.feature_dim, generator=generator)
    audio_features = torch.stack(
        [
            torch.stack(
                [
                    float(openings[(i + k - audio.context_frames // 2) % num_frames]) * pattern
                    for k in range(audio.context_frames)
                ]
            )
            for i in range(num_frames)
        ]
    )
    landmarks = torch.rand(1, config.model.landmark_encoder.num_points, 2, generator=generator).expand(
        num_frames, -1, -1
    )
    ae_loss = _fit_autoencoder(model, frames, steps, progress)
    logger.info("autoencoder trained %d steps, last loss %.4f", steps, ae_loss)
    conditions = model.prepare_conditions(
        audio_features=audio_features,
        landmarks=landmarks.contiguous(),
        reference_frames=frames[:1].expand(num_frames, -1, -1, -1).contiguous(),
        masked_frames=masked,
    )
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3)
    start = time.perf_counter()
    loss_value = float("nan")
    bar = tqdm(range(steps), desc="demo: training", disable=not progress)
    for _ in bar:
        loss = model.training_loss(target_frames=frames, conditions=conditions, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        bar.set_postfix(loss=f"{loss_value:.4f}")
    logger.info("trained %d steps in %.1f s, last loss %.4f", steps, time.perf_counter() - start, loss_value)

    model.eval()
    latent = config.model.autoencoder.latent_size
    mouth_mask = torch.zeros(1, 1, latent, latent)
    mouth_mask[..., int(latent * 0.58) :, :] = 1.0
    with torch.no_grad():
        known = model.encode_frames(frames)
        latents = sample_ddim(
            model.make_denoiser(conditions, mouth_mask=mouth_mask),
            randn(tuple(known.shape), generator, "cpu"),
            alphas_cumprod=model.alphas_cumprod,
            num_steps=config.sampler.num_steps,
            mouth_mask=mouth_mask,
            known_latents=known,
            generator=generator,
            progress=progress,
        )
        generated = model.decode_latents(latents)
    pixel_mask = F.interpolate(mouth_mask, size=(size, size)).bool().expand_as(frames)
    mouth_error = (generated - frames).abs()[pixel_mask].mean().item()
    grid = save_image_grid(
        Path(out_dir) / "demo_grid.png",
        [list(to_uint8(frames)), list(to_uint8(masked)), list(to_uint8(generated))],
    )
    return DemoResult(grid_path=grid, final_loss=loss_value, mouth_error=mouth_error)
