"""``difftalk train-autoencoder``: train the VQ autoencoder (f=4 or f=8) on the dataset's face crops.

Loss: ``l1 |x − x̂| + ssim (1 − (MS-)SSIM) + codebook + lpips LPIPS + adversarial hinge`` (LDM's
first-stage recipe). LPIPS is used only when its real weights are on the machine (else logged as
unavailable and skipped); the PatchGAN term is optional and starts after ``adversarial_start`` steps.
Writes ``<run_dir>/checkpoints/autoencoder`` (an ``Autoencoder`` checkpoint folder) and a training
state for exact resume, on the same Fabric / run-folder machinery as ``difftalk train``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_msssim import ms_ssim, ssim

from difftalk.config import DiffTalkConfig
from difftalk.data.frames import FrameDataset
from difftalk.data.transforms import augment_colours, to_uint8
from difftalk.io.image import save_image_grid
from difftalk.metrics.lpips import load_lpips
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.discriminator import PatchDiscriminator
from difftalk.train.adversarial import Adversary, adversarial_step
from difftalk.train.common import RunDir
from difftalk.train.loop import Batches, Every, StepOutput, TrainingState, fit, open_run

logger = logging.getLogger(__name__)

MS_SSIM_MIN_SIDE = 161  # pytorch-msssim's 5 scales with an 11-px window need more than 160 px


@dataclass
class AutoencoderTrainResult:
    run_dir: Path
    step: int
    last_loss: float
    model_dir: Path


def similarity_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − MS-SSIM (or SSIM for small crops) on images mapped to [0, 1]."""
    x = (reconstruction.float().clamp(-1, 1) + 1) / 2
    y = (target.float() + 1) / 2
    if min(x.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        return 1 - ms_ssim(x, y, data_range=1.0)
    return 1 - ssim(x, y, data_range=1.0, win_size=7 if min(x.shape[-2:]) < 64 else 11)


def train_autoencoder(config: DiffTalkConfig, resume: bool = True, progress: bool = True) -> AutoencoderTrainResult:
    """Train (or resume) the autoencoder of ``config.model.autoencoder``, driven by ``config.autoencoder_train``
    and ``config.data`` (``resume``, ``progress``: see :mod:`difftalk.train`)."""
    train = config.autoencoder_train
    fabric, run = open_run(train)
    rank, world = fabric.global_rank, fabric.world_size
    torch.manual_seed(train.seed + rank)

    model = Autoencoder(config.model.autoencoder)
    dataset = FrameDataset(
        config.data.data_dir, split="train", image_size=config.model.autoencoder.image_size, seed=train.seed
    )
    batches = Batches.build(fabric, dataset, train.batch_size, train.seed, config.data.num_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, betas=(0.5, 0.9))
    fabric_model, optimizer = fabric.setup(model, optimizer)
    adversary = None
    if train.adversarial_weight > 0:
        disc = PatchDiscriminator()
        disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=train.learning_rate, betas=(0.5, 0.9))
        adversary = Adversary(fabric, disc, disc_optimizer, "hinge", train.adversarial_start)
    lpips = load_lpips(train.lpips_weights or None, device=fabric.device) if train.lpips_weight > 0 else None
    if train.lpips_weight > 0 and lpips is None:
        logger.warning("LPIPS weights not found: training without the perceptual term (L1 + SSIM + codebook)")
    objects = {"model": model, "optimizer": optimizer, **(adversary.state() if adversary is not None else {})}
    state = TrainingState(fabric, run, config, objects, train.seed)
    if (state.restore() if resume else None) is None:
        run.write_run_info(config, world, {"stage": "autoencoder", "lpips": lpips is not None})
    preview = torch.stack([dataset[i] for i in torch.linspace(0, len(dataset) - 1, 6).round().long().tolist()])

    def step_fn(frames: torch.Tensor, index: int) -> StepOutput:
        frames = frames.to(fabric.device)
        if train.color_augment:
            # seeded by (seed, step, rank): exact resume needs no generator state
            generator = torch.Generator().manual_seed((train.seed * 1_000_003 + index) * world + rank)
            frames = augment_colours(frames, generator)
        output = fabric_model(frames)
        recon = output.reconstruction
        l1 = (recon.float() - frames.float()).abs().mean()
        sim = similarity_loss(recon, frames)
        loss = train.l1_weight * l1 + train.ssim_weight * sim + train.codebook_weight * output.codebook_loss
        perceptual = torch.full((), float("nan"))
        if lpips is not None:
            perceptual = lpips(recon.float(), frames.float()).mean()
            loss = loss + train.lpips_weight * perceptual
        gan = adversarial_step(adversary, index, frames, recon)
        if gan.active:
            loss = loss + train.adversarial_weight * gan.term
        metrics = {"l1": l1, "ssim_loss": sim, "codebook": output.codebook_loss, "lpips": perceptual}
        return StepOutput(loss, metrics, after=gan.update)

    def previews(step: int) -> None:
        if fabric.is_global_zero:
            _write_preview(model, preview, run, step)

    result = fit(
        fabric,
        state,
        batches,
        step_fn,
        run=run,
        settings=train,
        optimizer=optimizer,
        section="autoencoder_train",
        samples_per_step=train.batch_size,
        progress=progress,
        hooks=[Every(train.sample_every, previews)],
        export=lambda step: model.save_pretrained(run.checkpoints / "autoencoder"),
        show=("l1",),
    )
    previews(result.step)
    run.close()
    return AutoencoderTrainResult(run.path, result.step, result.last_loss, run.checkpoints / "autoencoder")


@torch.no_grad()
def _write_preview(model: Autoencoder, frames: torch.Tensor, run: RunDir, step: int) -> None:
    """Rows: input | reconstruction (through the codebook)."""
    model.eval()
    device = next(model.parameters()).device
    recon = model.decode(model.encode(frames.to(device))).clamp(-1, 1)
    model.train()
    save_image_grid(run.samples / f"step_{step:07d}.png", [list(to_uint8(frames)), list(to_uint8(recon))])
