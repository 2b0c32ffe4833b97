"""``difftalk train-lipgan``: train the Wav2Lip-style GAN baseline (``models.lipgan``) on a prepared dataset.

A sample is a window of ``frames_per_sample`` (5) consecutive frames with a face of one clip, as in
Wav2Lip. Per frame (built by ``TalkingHeadDataset.make_sample``, reused): the target crop, the crop
with the mouth masked by ``data.masks`` (exactly what the pipeline feeds the generator), the audio
feature windows around the frame; per window: one reference frame ≥ ``reference_min_distance`` away
(drawn anew every epoch; one fixed reference, as at inference) and the MFCC window for the expert.

Generator loss (Wav2Lip §3.2–3.3, with independent weights instead of Wav2Lip's convex mix):

* ``l1_weight · |G − target|₁`` over the whole crop;
* ``sync_weight · E_sync``: the frozen SyncNet expert (``syncnet``: a ``train-syncnet`` folder or a
  public ``syncnet_v2.model``) embeds the 5 generated lower faces (the generated mouth region
  composited into the target crop, i.e. what paste-back shows) and the MFCC window;
  ``E_sync = −log((cos + 1) / 2)``, the BCE towards "in sync" of ``train.syncnet``'s ``bce`` loss.
  Without an expert the term is off (a warning; ``sync`` is NaN in ``metrics.csv``);
* ``adversarial_weight · softplus(−D(G))``: non-saturating GAN loss of a PatchGAN on the lower half of
  the crop (``models.discriminator``), itself trained with ``softplus(−D(real)) + softplus(D(G))``.

AdamW; atomic checkpoints every ``checkpoint_every`` steps and at the end; exact resume (models,
optimisers, step, RNG, data position); ``metrics.csv``; held-out validation and PNG previews.
Writes ``<run_dir>/checkpoints/lipgan`` (a ``LipGANGenerator`` folder for ``pipeline.lipgan``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from difftalk.config import to_dict
from difftalk.config.training import FabricConfig, FeatureBackend, Precision
from difftalk.data.clips import DatasetError, load_manifest
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.data.transforms import to_uint8
from difftalk.io.audio import load_audio
from difftalk.io.image import save_image_grid
from difftalk.metrics.sync import FPS, mfcc, mfcc_windows
from difftalk.models.discriminator import PatchDiscriminator
from difftalk.models.lipgan import LipGANConfig, LipGANGenerator, sync_probability
from difftalk.models.syncnet import MFCC_STEPS_PER_FRAME, SyncNet, load_syncnet
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

MODEL_DIR = "lipgan"


@dataclass(frozen=True)
class LipGANTrainConfig(FabricConfig):
    """Training of the LipGAN baseline (``difftalk train-lipgan --set key=value``)."""

    model: LipGANConfig = field(default_factory=LipGANConfig)
    """Generator architecture (``model.image_size`` should be the dataset's crop size)."""
    syncnet: str | None = None
    """SyncNet expert (``train-syncnet`` folder or ``syncnet_v2.model``); None = no sync loss."""
    feature_backend: FeatureBackend = "mel"
    """Which ``features/<backend>.npy`` feeds the audio encoder (F must equal ``model.feature_dim``)."""
    split: str = "train"
    """Dataset split to train on."""
    eval_split: str = "test"
    """Split of the validation windows (falls back to ``split`` when it is empty)."""
    frames_per_sample: int = 5
    """Consecutive frames per sample (must equal the expert's ``num_frames``)."""
    reference_min_distance: int = 60
    """The window's reference frame is at least this far from its centre."""
    steps: int = 20_000
    """Optimiser steps."""
    batch_size: int = 8
    """Windows per device per step (the generator sees ``batch_size · frames_per_sample`` frames)."""
    learning_rate: float = 1e-4
    """AdamW learning rate of the generator (Wav2Lip: 1e-4)."""
    discriminator_learning_rate: float = 1e-4
    """AdamW learning rate of the discriminator."""
    weight_decay: float = 1e-4
    """AdamW weight decay (both networks)."""
    l1_weight: float = 1.0
    """Weight of the L1 reconstruction loss."""
    sync_weight: float = 0.03
    """Weight of the expert sync loss (Wav2Lip: 0.03)."""
    sync_start: int = 0
    """Step from which the sync loss is applied (it is logged before that)."""
    adversarial_weight: float = 0.07
    """Weight of the adversarial loss (Wav2Lip HQ: 0.07; 0 = no discriminator)."""
    adversarial_start: int = 0
    """Step from which the discriminator is trained and its loss applied."""
    discriminator_channels: int = 32
    """Width of the PatchGAN's first layer."""
    discriminator_layers: int = 3
    """Downsampling layers of the PatchGAN."""
    num_workers: int = 2
    """DataLoader workers (0 = load in the training process)."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    precision: Precision = "32-true"
    """Full precision by default (``auto`` picks bf16-mixed on GPUs that support it)."""
    log_every: int = 25
    """Steps between metrics.csv rows."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (and at the end)."""
    eval_every: int = 500
    """Steps between validations and previews (0 = only at the end)."""
    eval_windows: int = 16
    """Validation windows (0 = no validation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {
            "frames_per_sample": self.frames_per_sample >= 1,
            "reference_min_distance": self.reference_min_distance >= 0,
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "discriminator_learning_rate": self.discriminator_learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "l1_weight": self.l1_weight >= 0,
            "sync_weight": self.sync_weight >= 0,
            "sync_start": self.sync_start >= 0,
            "adversarial_weight": self.adversarial_weight >= 0,
            "adversarial_start": self.adversarial_start >= 0,
            "discriminator_channels": self.discriminator_channels >= 8 and self.discriminator_channels % 8 == 0,
            "discriminator_layers": self.discriminator_layers >= 1,
            "num_workers": self.num_workers >= 0,
            "log_every": self.log_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "eval_every": self.eval_every >= 0,
            "eval_windows": self.eval_windows >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"LipGANTrainConfig.{name}: invalid value {getattr(self, name)!r}")


@dataclass
class LipGANBatch:
    """A window sample (no batch dimension) or a batch of them (leading B); T = ``frames_per_sample``."""

    target_frames: torch.Tensor
    """``(B, T, 3, S, S)`` float in [-1, 1]."""
    masked_frames: torch.Tensor
    """``(B, T, 3, S, S)`` the targets with the mouth region set to -1."""
    reference_frames: torch.Tensor
    """``(B, T, 3, S, S)`` the window's reference frame, repeated."""
    mouth_masks: torch.Tensor
    """``(B, T, 1, S, S)`` float {0, 1}: 1 = mouth region."""
    audio_features: torch.Tensor
    """``(B, T, C, 16, F)`` the C = ``context_frames`` feature windows around each frame."""
    mfcc: torch.Tensor | None
    """``(B, 1, 13, 4T)`` MFCC window of the sample (None without an expert)."""

    def to(self, device: torch.device | str) -> LipGANBatch:
        """Move every tensor to ``device``."""
        moved = {name: getattr(self, name).to(device, non_blocking=True) for name in FRAME_FIELDS}
        return LipGANBatch(**moved, mfcc=None if self.mfcc is None else self.mfcc.to(device, non_blocking=True))


FRAME_FIELDS = ("target_frames", "masked_frames", "reference_frames", "mouth_masks", "audio_features")
"""The per-frame fields of :class:`LipGANBatch` (also the names of the ``TalkingHeadBatch`` fields they stack)."""


def collate_windows(samples: Sequence[LipGANBatch]) -> LipGANBatch:
    """Stack window samples into a batch (the DataLoader ``collate_fn``)."""
    stacked = {name: torch.stack([getattr(s, name) for s in samples]) for name in FRAME_FIELDS}
    mfccs = [s.mfcc for s in samples if s.mfcc is not None]
    return LipGANBatch(**stacked, mfcc=torch.stack(mfccs) if len(mfccs) == len(samples) else None)


class LipGANWindowDataset(Dataset[LipGANBatch]):
    """Every window of ``frames_per_sample`` consecutive frames with a face (see the module docstring).

    The reference frame comes from ``np.random.default_rng((seed, epoch, index))``.
    """

    def __init__(
        self, data_dir: str | Path, config: LipGANTrainConfig, split: str | None = None, with_mfcc: bool = False
    ) -> None:
        self.config = config
        self.frames = TalkingHeadDataset(
            data_dir,
            split=split or config.split,
            image_size=config.model.image_size,
            context_frames=config.model.context_frames,
            feature_backend=config.feature_backend,
            reference_min_distance=config.reference_min_distance,
            seed=config.seed,
        )
        self.clips = self.frames.clips
        self.epoch = 0
        window = config.frames_per_sample
        self.mfccs = [mfcc(load_audio(clip.path / "audio.wav")) for clip in self.clips] if with_mfcc else None
        clip_of, start_of = [], []
        for index, clip in enumerate(self.clips):
            last = clip.num_frames - window
            if self.mfccs is not None:
                last = min(last, (self.mfccs[index].shape[1] - MFCC_STEPS_PER_FRAME * window) // MFCC_STEPS_PER_FRAME)
            found = np.asarray(clip.face_found, dtype=bool)
            for start in range(last + 1):
                if found[start : start + window].all():
                    clip_of.append(index)
                    start_of.append(start)
        self._clip_of = np.asarray(clip_of, dtype=np.int32)
        self._start_of = np.asarray(start_of, dtype=np.int32)
        if self._start_of.size == 0:
            raise DatasetError(f"{data_dir} ({split or config.split}) has no {window}-frame window with a face")

    def __len__(self) -> int:
        return int(self._start_of.size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> LipGANBatch:
        rng = np.random.default_rng((self.config.seed, self.epoch, index))
        clip_index, start = int(self._clip_of[index]), int(self._start_of[index])
        window = self.config.frames_per_sample
        reference = self.frames.choose_reference(self.clips[clip_index], start + window // 2, rng)
        frames = [self.frames.make_sample(clip_index, start + i, reference) for i in range(window)]
        stacked = {name: torch.stack([getattr(f, name) for f in frames]) for name in FRAME_FIELDS}
        mfcc_window = None if self.mfccs is None else mfcc_windows(self.mfccs[clip_index], [start], window)[0]
        return LipGANBatch(**stacked, mfcc=mfcc_window)


def adversarial_input(frames: torch.Tensor) -> torch.Tensor:
    """The lower half ``(N, 3, S/2, S)`` of crops ``(N, 3, S, S)`` (where the mouth is), for the discriminator."""
    size = frames.shape[-2]
    return frames[..., size - size // 2 :, :]


@dataclass
class LipGANTrainResult:
    """What :func:`train_lipgan` produced."""

    run_dir: Path
    step: int
    last_loss: float
    model_dir: Path
    """The ``LipGANGenerator`` checkpoint folder."""
    sync_enabled: bool
    """Whether the expert sync loss was used."""
    validation: dict[str, float]
    """The last validation numbers (empty without validation windows)."""


def generate_windows(generator: Any, batch: LipGANBatch) -> torch.Tensor:
    """Run the generator on every frame of a window batch: ``(B, T, 3, S, S)`` in [-1, 1]."""
    size, count = batch.target_frames.shape[:2]
    generated = generator(
        batch.masked_frames.flatten(0, 1), batch.reference_frames.flatten(0, 1), batch.audio_features.flatten(0, 1)
    )
    return generated.unflatten(0, (size, count))


def composite(generated: torch.Tensor, batch: LipGANBatch) -> torch.Tensor:
    """The generated mouth region pasted into the target crops (what paste-back shows), ``(B, T, 3, S, S)``."""
    mask = batch.mouth_masks.to(generated.dtype)
    return mask * generated + (1 - mask) * batch.target_frames.to(generated.dtype)


@torch.no_grad()
def validate_lipgan(
    generator: LipGANGenerator,
    expert: SyncNet | None,
    batch: LipGANBatch,
    device: torch.device | str,
    preview: Path | None = None,
) -> dict[str, float]:
    """Held-out numbers of a fixed window batch, and optionally a preview PNG.

    Args:
        preview: where to write a grid with rows masked | reference | generated | generated mouth in the
            target | target (the first frame of up to 6 windows).

    Returns:
        ``l1`` (whole crop), ``l1_mouth`` (mouth region only) and, with an expert, ``sync_generated`` /
        ``sync_real``: its mean "in sync" probability of the composited generated and the real windows.
    """
    was_training = generator.training
    generator.eval()
    batch = batch.to(device)
    generated = generate_windows(generator, batch).float()
    generator.train(was_training)
    target, mask, pasted = batch.target_frames.float(), batch.mouth_masks.float(), composite(generated, batch)
    error = (generated - target).abs()
    values = {"l1": float(error.mean()), "l1_mouth": float((error * mask).sum() / (3 * mask.sum()).clamp_min(1))}
    if expert is not None and batch.mfcc is not None:
        values["sync_generated"] = float(sync_probability(expert, pasted, batch.mfcc).mean())
        values["sync_real"] = float(sync_probability(expert, target, batch.mfcc).mean())
    if preview is not None:
        rows = [batch.masked_frames, batch.reference_frames, generated, pasted, target]
        save_image_grid(preview, [list(to_uint8(row[:6, 0].float())) for row in rows])
    return values


def _open_expert(config: LipGANTrainConfig, data_dir: str | Path, device: torch.device) -> SyncNet | None:
    if config.syncnet is None:
        logger.warning("no SyncNet expert given (syncnet: null): training WITHOUT the sync loss")
        return None
    manifest = load_manifest(data_dir)
    if abs(float(manifest.get("fps", FPS)) - FPS) > 1e-6:
        raise DatasetError(f"{data_dir} is at {manifest.get('fps')} fps; the SyncNet expert needs {FPS} fps")
    expert = load_syncnet(config.syncnet, device=device).eval().requires_grad_(False)
    if expert.config.num_frames != config.frames_per_sample:
        raise ValueError(
            f"the expert {config.syncnet} sees {expert.config.num_frames} frames; set frames_per_sample to it"
        )
    logger.info(
        "sync loss on: expert %s (weight %g from step %d)", config.syncnet, config.sync_weight, config.sync_start
    )
    return expert


def train_lipgan(
    config: LipGANTrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
) -> LipGANTrainResult:
    """Train (or resume) the LipGAN baseline on the prepared dataset ``data_dir``; outputs go to ``run_dir``.

    Raises:
        ValueError: the audio features, expert and config do not fit together.
        DatasetError / FileNotFoundError: the dataset is missing or has no usable window.
    """
    fabric = make_fabric(config)
    rank, world = fabric.global_rank, fabric.world_size
    run = RunDir(run_dir, active=fabric.is_global_zero)
    state_path = run.checkpoints / STATE_NAME
    torch.manual_seed(config.seed + rank)
    logger.info("train-lipgan: seed %d, data %s, features %s", config.seed, data_dir, config.feature_backend)

    expert = _open_expert(config, data_dir, fabric.device)
    dataset = LipGANWindowDataset(data_dir, config, with_mfcc=expert is not None)
    feature_dim = dataset.clips[0].features(config.feature_backend).shape[-1]
    if feature_dim != config.model.feature_dim:
        raise ValueError(
            f"the '{config.feature_backend}' features have {feature_dim} dims, but model.feature_dim is "
            f"{config.model.feature_dim}; set model.feature_dim={feature_dim}"
        )
    eval_batch = None
    if config.eval_windows:
        try:
            eval_set = LipGANWindowDataset(data_dir, config, config.eval_split, with_mfcc=expert is not None)
        except DatasetError:
            eval_set = dataset
        picks = np.unique(np.linspace(0, len(eval_set) - 1, config.eval_windows).round().astype(int))
        eval_batch = collate_windows([eval_set[int(i)] for i in picks])

    generator = LipGANGenerator(config.model)
    sampler = ResumableSampler(len(dataset), config.batch_size, rank, world, config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate_windows,
        pin_memory=fabric.device.type == "cuda",
        drop_last=True,
        worker_init_fn=ignore_stop_signals,
    )
    betas = (0.5, 0.999)  # Wav2Lip's Adam betas
    optimizer = torch.optim.AdamW(
        generator.parameters(), lr=config.learning_rate, betas=betas, weight_decay=config.weight_decay
    )
    fabric_generator, optimizer = fabric.setup(generator, optimizer)
    discriminator = disc_optimizer = None
    if config.adversarial_weight > 0:
        disc = PatchDiscriminator(config.discriminator_channels, config.discriminator_layers)
        disc_opt = torch.optim.AdamW(
            disc.parameters(), lr=config.discriminator_learning_rate, betas=betas, weight_decay=config.weight_decay
        )
        discriminator, disc_optimizer = fabric.setup(disc, disc_opt)

    start_step = 0
    if resume and state_path.is_file():
        state = load_state(state_path)
        generator.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        if discriminator is not None and disc_optimizer is not None:
            if "discriminator" not in state:
                raise ValueError(f"{state_path} has no discriminator; resume with adversarial_weight=0 or restart")
            discriminator.load_state_dict(state["discriminator"], strict=True)
            disc_optimizer.load_state_dict(state["discriminator_optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step = int(state["step"])
        logger.info("resumed from %s at step %d", state_path, start_step)
    else:
        run.write_run_info(config, world, {"stage": "lipgan", "data_dir": str(data_dir), "sync": expert is not None})

    validation: dict[str, float] = {}
    # metrics.csv takes its columns from the first row, so validation values ride in the regular rows.
    val_keys = ("l1", "l1_mouth", "sync_generated", "sync_real") if eval_batch is not None else ()

    def validate(step: int) -> bool:
        nonlocal validation
        if fabric.is_global_zero and eval_batch is not None:
            preview = run.samples / f"step_{step:07d}.png"
            validation = validate_lipgan(generator, expert, eval_batch, fabric.device, preview)
            logger.info("step %d validation: %s", step, validation)
            return True
        return False

    def checkpoint(step: int) -> None:
        if fabric.is_global_zero:
            state = {
                "version": 1,
                "step": step,
                "model": generator.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": to_dict(config),
            }
            if discriminator is not None and disc_optimizer is not None:
                state["discriminator"] = discriminator.state_dict()
                state["discriminator_optimizer"] = disc_optimizer.state_dict()
            save_state(state_path, state)
            extra = {
                "step": step,
                "feature_backend": config.feature_backend,
                "syncnet": config.syncnet,
                "validation": validation,
            }
            generator.save_pretrained(run.checkpoints / MODEL_DIR, extra=extra)
        fabric.barrier()

    nan = float("nan")
    bar = tqdm(total=config.steps, initial=start_step, desc="lipgan", disable=not (progress and fabric.is_global_zero))
    step, loss_value = start_step, nan
    window_start, window_steps, run_start = time.perf_counter(), 0, time.perf_counter()
    with StopSignal() as stop:
        for index, epoch, batch in iterate_batches(loader, sampler, dataset, start_step, config.steps):
            batch = batch.to(fabric.device)
            generated = generate_windows(fabric_generator, batch)
            l1 = (generated.float() - batch.target_frames.float()).abs().mean()
            loss = config.l1_weight * l1
            sync = torch.full((), nan)
            if expert is not None and batch.mfcc is not None:
                use_sync = index >= config.sync_start and config.sync_weight > 0
                with torch.set_grad_enabled(use_sync):
                    sync = -torch.log(sync_probability(expert, composite(generated, batch), batch.mfcc)).mean()
                if use_sync:
                    loss = loss + config.sync_weight * sync
            use_gan = discriminator is not None and index >= config.adversarial_start
            adversarial = torch.full((), nan)
            if use_gan and discriminator is not None:
                discriminator.requires_grad_(False)
                adversarial = F.softplus(-discriminator(adversarial_input(generated.flatten(0, 1)))).mean()
                discriminator.requires_grad_(True)
                loss = loss + config.adversarial_weight * adversarial
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            disc_loss = nan
            if use_gan and discriminator is not None and disc_optimizer is not None:
                real = discriminator(adversarial_input(batch.target_frames.flatten(0, 1)))
                fake = discriminator(adversarial_input(generated.detach().flatten(0, 1)))
                d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
                disc_optimizer.zero_grad(set_to_none=True)
                fabric.backward(d_loss)
                disc_optimizer.step()
                disc_loss = float(d_loss.detach())
            step, window_steps = index + 1, window_steps + 1
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower learning_rate")
            bar.update()
            stop_now = stop_everywhere(fabric, stop.requested)
            final = step == config.steps or stop_now
            validated = ((config.eval_every and step % config.eval_every == 0) or final) and validate(step)
            if step % config.log_every == 0 or final or validated:
                rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                bar.set_postfix(loss=f"{loss_value:.4f}", l1=f"{float(l1.detach()):.4f}")
                run.log(
                    step,
                    {
                        "epoch": epoch,
                        "loss": loss_value,
                        "l1": float(l1.detach()),
                        "sync": float(sync.detach()),
                        "adversarial": float(adversarial.detach()),
                        "discriminator": disc_loss,
                        "learning_rate": config.learning_rate,
                        "steps_per_second": rate,
                        "samples_per_second": rate * config.batch_size * config.frames_per_sample * world,
                        "elapsed_seconds": time.perf_counter() - run_start,
                        "host_memory_mb": host_memory_mb(),
                        **{f"val_{k}": validation.get(k, nan) if validated else nan for k in val_keys},
                    },
                )
                window_start, window_steps = time.perf_counter(), 0
            if step % config.checkpoint_every == 0 or final:
                checkpoint(step)
            if stop_now:
                break
    bar.close()
    run.close()
    return LipGANTrainResult(run.path, step, loss_value, run.checkpoints / MODEL_DIR, expert is not None, validation)
