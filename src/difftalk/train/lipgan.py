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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from difftalk.config.lipgan import LipGANTrainConfig
from difftalk.data.clips import DatasetError, load_manifest
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.data.transforms import to_uint8
from difftalk.io.image import save_image_grid
from difftalk.metrics.sync import FPS
from difftalk.models.discriminator import PatchDiscriminator
from difftalk.models.lipgan import LipGANGenerator, sync_probability
from difftalk.models.syncnet import SyncNet, load_syncnet
from difftalk.train.adversarial import Adversary, adversarial_step
from difftalk.train.loop import Batches, Every, StepOutput, TrainingState, fit, open_run
from difftalk.train.windows import FrameWindows

__all__ = [
    "LipGANBatch",
    "LipGANTrainConfig",  # defined in difftalk.config.lipgan; imported from here by earlier code
    "LipGANTrainResult",
    "LipGANWindowDataset",
    "collate_windows",
    "train_lipgan",
    "validate_lipgan",
]

logger = logging.getLogger(__name__)

MODEL_DIR = "lipgan"


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
    """Every window of ``frames_per_sample`` consecutive frames with a face (see the module docstring):
    ``train.windows.FrameWindows`` of the frames, as :class:`LipGANBatch` samples."""

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
            silence_db=config.silence_db,
            silence_hold=config.silence_hold,
        )
        self.clips = self.frames.clips
        where = f"{data_dir} ({split or config.split})"
        self.windows = FrameWindows(self.frames, config.frames_per_sample, config.seed, with_mfcc, where)

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        self.windows.set_epoch(epoch)

    def __getitem__(self, index: int) -> LipGANBatch:
        window = self.windows[index]
        stacked = {name: getattr(window, name) for name in FRAME_FIELDS}
        return LipGANBatch(**stacked, mfcc=window.mfcc)


def adversarial_input(frames: torch.Tensor) -> torch.Tensor:
    """The lower half ``(N, 3, S/2, S)`` of crops ``(N, 3, S, S)`` (where the mouth is), for the discriminator."""
    size = frames.shape[-2]
    return frames[..., size - size // 2 :, :]


def _window_halves(frames: torch.Tensor) -> torch.Tensor:
    """What the discriminator sees of windows ``(B, T, 3, S, S)``: the lower half of every frame."""
    return adversarial_input(frames.flatten(0, 1))


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


def _open_expert(config: LipGANTrainConfig, device: torch.device) -> SyncNet | None:
    if config.syncnet is None:
        logger.warning("no SyncNet expert given (syncnet: null): training WITHOUT the sync loss")
        return None
    manifest = load_manifest(config.data_dir)
    if abs(float(manifest.get("fps", FPS)) - FPS) > 1e-6:
        raise DatasetError(f"{config.data_dir} is at {manifest.get('fps')} fps; the SyncNet expert needs {FPS} fps")
    expert = load_syncnet(config.syncnet, device=device).eval().requires_grad_(False)
    if expert.config.num_frames != config.frames_per_sample:
        raise ValueError(
            f"the expert {config.syncnet} sees {expert.config.num_frames} frames; set frames_per_sample to it"
        )
    logger.info(
        "sync loss on: expert %s (weight %g from step %d)", config.syncnet, config.sync_weight, config.sync_start
    )
    return expert


def _eval_batch(config: LipGANTrainConfig, dataset: LipGANWindowDataset, with_mfcc: bool) -> LipGANBatch | None:
    """``eval_windows`` fixed windows of ``eval_split`` (of the training split when that is empty), or None."""
    if not config.eval_windows:
        return None
    try:
        eval_set = LipGANWindowDataset(config.data_dir, config, config.eval_split, with_mfcc=with_mfcc)
    except DatasetError:
        eval_set = dataset
    picks = np.unique(np.linspace(0, len(eval_set) - 1, config.eval_windows).round().astype(int))
    return collate_windows([eval_set[int(i)] for i in picks])


def train_lipgan(config: LipGANTrainConfig, resume: bool = True, progress: bool = True) -> LipGANTrainResult:
    """Train (or resume) the LipGAN baseline on ``config.data_dir``; outputs go to ``config.run_dir``
    (``resume``, ``progress``: see :mod:`difftalk.train`).

    Raises:
        ValueError: the audio features, expert and config do not fit together.
        DatasetError / FileNotFoundError: the dataset is missing or has no usable window.
    """
    fabric, run = open_run(config)
    rank, world = fabric.global_rank, fabric.world_size
    torch.manual_seed(config.seed + rank)
    logger.info("train-lipgan: seed %d, data %s, features %s", config.seed, config.data_dir, config.feature_backend)

    expert = _open_expert(config, fabric.device)
    dataset = LipGANWindowDataset(config.data_dir, config, with_mfcc=expert is not None)
    feature_dim = dataset.clips[0].features(config.feature_backend).shape[-1]
    if feature_dim != config.model.feature_dim:
        raise ValueError(
            f"the '{config.feature_backend}' features have {feature_dim} dims, but model.feature_dim is "
            f"{config.model.feature_dim}; set model.feature_dim={feature_dim}"
        )
    eval_batch = _eval_batch(config, dataset, with_mfcc=expert is not None)

    generator = LipGANGenerator(config.model)
    batches = Batches.build(fabric, dataset, config.batch_size, config.seed, config.num_workers, collate_windows)
    betas = (0.5, 0.999)  # Wav2Lip's Adam betas
    optimizer = torch.optim.AdamW(
        generator.parameters(), lr=config.learning_rate, betas=betas, weight_decay=config.weight_decay
    )
    fabric_generator, optimizer = fabric.setup(generator, optimizer)
    adversary = None
    if config.adversarial_weight > 0:
        disc = PatchDiscriminator(config.discriminator_channels, config.discriminator_layers)
        disc_optimizer = torch.optim.AdamW(
            disc.parameters(), lr=config.discriminator_learning_rate, betas=betas, weight_decay=config.weight_decay
        )
        adversary = Adversary(fabric, disc, disc_optimizer, "non_saturating", config.adversarial_start, _window_halves)
    objects = {"model": generator, "optimizer": optimizer, **(adversary.state() if adversary is not None else {})}
    state = TrainingState(fabric, run, config, objects, config.seed)
    if (state.restore() if resume else None) is None:
        extra = {"stage": "lipgan", "data_dir": config.data_dir, "sync": expert is not None}
        run.write_run_info(config, world, extra)

    validation: dict[str, float] = {}
    nan = float("nan")

    def step_fn(batch: LipGANBatch, index: int) -> StepOutput:
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
        gan = adversarial_step(adversary, index, batch.target_frames, generated)
        if gan.active:
            loss = loss + config.adversarial_weight * gan.term
        return StepOutput(loss, {"l1": l1, "sync": sync, "adversarial": gan.term}, after=gan.update)

    def validate(step: int) -> dict[str, float]:
        nonlocal validation
        if not (fabric.is_global_zero and eval_batch is not None):
            return {}
        preview = run.samples / f"step_{step:07d}.png"
        validation = validate_lipgan(generator, expert, eval_batch, fabric.device, preview)
        logger.info("step %d validation: %s", step, validation)
        return {f"val_{k}": v for k, v in validation.items()}

    def export(step: int) -> None:
        extra = {"step": step, "feature_backend": config.feature_backend, "syncnet": config.syncnet}
        generator.save_pretrained(run.checkpoints / MODEL_DIR, extra={**extra, "validation": validation})

    result = fit(
        fabric,
        state,
        batches,
        step_fn,
        run=run,
        settings=config,
        optimizer=optimizer,
        section="lipgan_train",
        samples_per_step=config.batch_size * config.frames_per_sample,
        progress=progress,
        hooks=[Every(config.eval_every, validate, at_end=True)],
        export=export,
        show=("l1",),
    )
    run.close()
    return LipGANTrainResult(
        run.path, result.step, result.last_loss, run.checkpoints / MODEL_DIR, expert is not None, validation
    )
