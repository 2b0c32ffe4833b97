"""``difftalk train-autoencoder``: train the VQ autoencoder (f=4 or f=8) on the dataset's face crops.

Loss: ``l1 |x − x̂| + ssim (1 − (MS-)SSIM) + codebook + lpips LPIPS + adversarial hinge`` (LDM's
first-stage recipe). LPIPS is used only when its real weights are on the machine (else logged as
unavailable and skipped); the PatchGAN term is optional and starts after ``adversarial_start`` steps.
Writes ``<run_dir>/checkpoints/autoencoder`` (an ``Autoencoder`` checkpoint folder) and a training
state for exact resume, on the same Fabric / run-folder machinery as ``difftalk train``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim, ssim
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from difftalk.config import DiffTalkConfig, to_dict
from difftalk.data.frames import FrameDataset
from difftalk.data.transforms import augment_colours, to_uint8
from difftalk.io.image import save_image_grid
from difftalk.metrics.lpips import load_lpips
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.discriminator import PatchDiscriminator
from difftalk.train.common import (
    STATE_NAME,
    RunDir,
    StopSignal,
    host_memory_mb,
    ignore_stop_signals,
    iterate_batches,
    load_state,
    make_fabric,
    save_state,
    stop_everywhere,
)
from difftalk.train.sampler import ResumableSampler

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
    """Train (or resume) the autoencoder of ``config.model.autoencoder`` with ``config.autoencoder_train``."""
    train = config.autoencoder_train
    fabric = make_fabric(train)
    rank, world = fabric.global_rank, fabric.world_size
    run = RunDir(train.run_dir, active=fabric.is_global_zero)
    state_path = run.checkpoints / STATE_NAME
    torch.manual_seed(train.seed + rank)

    model = Autoencoder(config.model.autoencoder)
    dataset = FrameDataset(
        config.data.data_dir, split="train", image_size=config.model.autoencoder.image_size, seed=train.seed
    )
    sampler = ResumableSampler(len(dataset), train.batch_size, rank, world, train.seed)
    loader = DataLoader(
        dataset,
        batch_size=train.batch_size,
        sampler=sampler,
        num_workers=config.data.num_workers,
        pin_memory=fabric.device.type == "cuda",
        drop_last=True,
        worker_init_fn=ignore_stop_signals,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, betas=(0.5, 0.9))
    fabric_model, optimizer = fabric.setup(model, optimizer)
    discriminator = disc_optimizer = None
    if train.adversarial_weight > 0:
        disc = PatchDiscriminator()
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=train.learning_rate, betas=(0.5, 0.9))
        discriminator, disc_optimizer = fabric.setup(disc, disc_opt)
    lpips = load_lpips(train.lpips_weights or None, device=fabric.device) if train.lpips_weight > 0 else None
    if train.lpips_weight > 0 and lpips is None:
        logger.warning("LPIPS weights not found: training without the perceptual term (L1 + SSIM + codebook)")

    start_step = 0
    if resume and state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        if discriminator is not None and disc_optimizer is not None:
            discriminator.load_state_dict(state["discriminator"], strict=True)
            disc_optimizer.load_state_dict(state["discriminator_optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step = int(state["step"])
        logger.info("resumed from %s at step %d", state_path, start_step)
    else:
        run.write_run_info(config, world, {"stage": "autoencoder", "lpips": lpips is not None})
    preview = torch.stack([dataset[i] for i in torch.linspace(0, len(dataset) - 1, 6).round().long().tolist()])

    def checkpoint(step: int) -> None:
        if fabric.is_global_zero:
            state = {
                "version": 1,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": to_dict(config),
            }
            if discriminator is not None and disc_optimizer is not None:
                state["discriminator"] = discriminator.state_dict()
                state["discriminator_optimizer"] = disc_optimizer.state_dict()
            save_state(state_path, state)
            model.save_pretrained(run.checkpoints / "autoencoder")
        fabric.barrier()

    bar = tqdm(
        total=train.steps, initial=start_step, desc="autoencoder", disable=not (progress and fabric.is_global_zero)
    )
    step, loss_value = start_step, float("nan")
    window_start, window_steps, run_start = time.perf_counter(), 0, time.perf_counter()
    with StopSignal() as stop:
        for index, epoch, frames in iterate_batches(loader, sampler, dataset, start_step, train.steps):
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
            perceptual = torch.zeros((), device=fabric.device)
            if lpips is not None:
                perceptual = lpips(recon.float(), frames.float()).mean()
                loss = loss + train.lpips_weight * perceptual
            use_gan = discriminator is not None and index >= train.adversarial_start
            if use_gan and discriminator is not None:
                discriminator.requires_grad_(False)
                loss = loss + train.adversarial_weight * (-discriminator(recon).mean())
                discriminator.requires_grad_(True)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            disc_loss = float("nan")
            if use_gan and discriminator is not None and disc_optimizer is not None:
                real, fake = discriminator(frames), discriminator(recon.detach())
                d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
                disc_optimizer.zero_grad(set_to_none=True)
                fabric.backward(d_loss)
                disc_optimizer.step()
                disc_loss = float(d_loss.detach())
            step, window_steps = index + 1, window_steps + 1
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower autoencoder_train.learning_rate")
            bar.update()
            if step % train.log_every == 0 or step == train.steps:
                rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                bar.set_postfix(loss=f"{loss_value:.4f}", l1=f"{float(l1.detach()):.4f}")
                run.log(
                    step,
                    {
                        "epoch": epoch,
                        "loss": loss_value,
                        "l1": float(l1.detach()),
                        "ssim_loss": float(sim.detach()),
                        "codebook": float(output.codebook_loss.detach()),
                        "lpips": float(perceptual.detach()) if lpips is not None else float("nan"),
                        "discriminator": disc_loss,
                        "steps_per_second": rate,
                        "elapsed_seconds": time.perf_counter() - run_start,
                        "host_memory_mb": host_memory_mb(),
                    },
                )
                window_start, window_steps = time.perf_counter(), 0
            if fabric.is_global_zero and train.sample_every and step % train.sample_every == 0:
                _write_preview(model, preview, run, step)
            stop_now = stop_everywhere(fabric, stop.requested)
            if step % train.checkpoint_every == 0 or step == train.steps or stop_now:
                checkpoint(step)
            if stop_now:
                break
    bar.close()
    if fabric.is_global_zero:
        _write_preview(model, preview, run, step)
    run.close()
    return AutoencoderTrainResult(run.path, step, loss_value, run.checkpoints / "autoencoder")


@torch.no_grad()
def _write_preview(model: Autoencoder, frames: torch.Tensor, run: RunDir, step: int) -> None:
    """Rows: input | reconstruction (through the codebook)."""
    model.eval()
    device = next(model.parameters()).device
    recon = model.decode(model.encode(frames.to(device))).clamp(-1, 1)
    model.train()
    save_image_grid(run.samples / f"step_{step:07d}.png", [list(to_uint8(frames)), list(to_uint8(recon))])
