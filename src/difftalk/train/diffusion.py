"""``difftalk train``: train E_A, E_L and the UNet with the ε-MSE loss, the autoencoder frozen.

setup → fit: Fabric (any device count), AdamW, optional linear warm-up, gradient clipping, EMA,
logging every N steps, PNG sample grids (target | masked | reference | generated, EMA weights,
masked-z_T DDIM), atomic checkpoints every N steps / at the end / on SIGTERM, exact resume.

Files in ``<run_dir>/checkpoints``: ``training_state.pt`` (everything needed to resume) and
``model/`` (EMA weights as an inference checkpoint, ``DiffTalkModel.from_pretrained``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from difftalk.config import DiffTalkConfig
from difftalk.data.batch import TalkingHeadBatch, collate_samples
from difftalk.data.clips import open_clips
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.data.masks import latent_mask
from difftalk.data.transforms import to_uint8
from difftalk.diffusion.ddim import randn, sample_ddim
from difftalk.io.image import save_image_grid
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.difftalk import DiffTalkConditions, DiffTalkModel, LossWeighting
from difftalk.train.common import RunDir
from difftalk.train.ema import EMA
from difftalk.train.latent_cache import build_latent_cache
from difftalk.train.loop import (
    Batches,
    Every,
    StepOutput,
    TrainableWeights,
    TrainingState,
    fit,
    linear_warmup,
    open_run,
)

logger = logging.getLogger(__name__)

SAMPLE_GRID_SIZE = 4


@dataclass
class TrainResult:
    """Where a training run ended."""

    run_dir: Path
    step: int
    last_loss: float
    stopped_early: bool
    model_dir: Path


def _load_autoencoder(model: DiffTalkModel, path: str) -> None:
    if not path:
        logger.warning("train.autoencoder is empty: the autoencoder is randomly initialised (tests only)")
        return
    autoencoder = Autoencoder.from_pretrained(path)
    if autoencoder.config != model.config.autoencoder:
        raise ValueError(
            f"the autoencoder in {path} was built with {autoencoder.config}, but model.autoencoder is "
            f"{model.config.autoencoder}; make the config match the checkpoint"
        )
    model.autoencoder.load_state_dict(autoencoder.state_dict(), strict=True)


def _conditions(
    model: DiffTalkModel, batch: TalkingHeadBatch, clean: torch.Tensor, mask: torch.Tensor
) -> DiffTalkConditions:
    """Named conditions of a batch: cached latents scaled, frames through the frozen encoder.

    ``clean``: the target's diffusion latents; ``mask``: its latent mouth mask ``(B, 1, h, w)``.
    """
    if batch.reference_latents is not None:
        reference = model.scale_latents(batch.reference_latents)
    else:
        assert batch.reference_frames is not None
        reference = model.encode_frames(batch.reference_frames)
    if model.config.masked_target == "pixel" and batch.masked_latents is not None:
        masked = model.scale_latents(batch.masked_latents)
    else:
        masked = model.masked_target_latents(clean, mask, batch.masked_frames)
    return DiffTalkConditions(
        audio_features=batch.audio_features,
        landmarks=batch.landmarks,
        reference_latents=reference,
        masked_latents=masked,
    )


def _targets(model: DiffTalkModel, batch: TalkingHeadBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(target diffusion latents ``(B, C, h, w)``, latent mouth mask ``(B, 1, h, w)``) of a batch."""
    if batch.target_latents is not None:
        clean = model.scale_latents(batch.target_latents)
    else:
        assert batch.target_frames is not None
        clean = model.encode_frames(batch.target_frames)
    if batch.mouth_masks is None:
        raise ValueError("training batches need mouth_masks (TalkingHeadDataset provides them)")
    return clean, latent_mask(batch.mouth_masks.to(clean.dtype), clean.shape[-1])


T_RANGES = ((0, 100), (100, 300), (300, 700), (700, 1000))
"""Diffusion-step ranges whose ε-MSE inside/outside the mouth mask is logged separately (fractions of T
for schedules of another length)."""


class LossByRange:
    """Running sums of the unweighted ε-MSE inside/outside the mouth mask per t range, between log rows."""

    def __init__(self, num_timesteps: int) -> None:
        self.edges = [(round(a * num_timesteps / 1000), round(b * num_timesteps / 1000)) for a, b in T_RANGES]
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, timesteps: torch.Tensor, inside: torch.Tensor | None, outside: torch.Tensor | None) -> None:
        if inside is None or outside is None:
            return
        # one device → host copy per step (the loss is read every step anyway)
        t, mse_in, mse_out = torch.stack([timesteps.float(), inside.float(), outside.float()]).detach().cpu()
        for (low, high), (a, b) in zip(self.edges, T_RANGES, strict=True):
            pick = (t >= low) & (t < high)
            count = int(pick.sum())
            if not count:
                continue
            for where, column in (("in", mse_in), ("out", mse_out)):
                key = f"mse_{where}_t{a}_{b}"
                self.sums[key] = self.sums.get(key, 0.0) + float(column[pick].sum())
                self.counts[key] = self.counts.get(key, 0) + count

    def means(self) -> dict[str, float]:
        """Mean per key over the window (NaN where the window drew no t in that range); then reset."""
        keys = [f"mse_{w}_t{a}_{b}" for a, b in T_RANGES for w in ("in", "out")]
        out = {k: self.sums[k] / self.counts[k] if self.counts.get(k) else float("nan") for k in keys}
        self.reset()
        return out


@torch.no_grad()
def sample_grid(model: DiffTalkModel, batch: TalkingHeadBatch, num_steps: int, seed: int) -> list[list[Any]]:
    """Rows target | masked | reference | generated (uint8 images) for a small batch."""
    model.eval()
    assert batch.target_frames is not None
    known, mask = _targets(model, batch)
    conditions = _conditions(model, batch, known, mask)
    generator = torch.Generator().manual_seed(seed)
    latents = sample_ddim(
        model.make_denoiser(conditions),
        randn(tuple(known.shape), generator, known.device, known.dtype),
        alphas_cumprod=model.alphas_cumprod,
        num_steps=num_steps,
        mouth_mask=mask,
        known_latents=known,
        generator=generator,
    )
    generated = model.decode_latents(latents)
    model.train()
    assert batch.masked_frames is not None and batch.reference_frames is not None
    return [
        list(to_uint8(batch.target_frames)),
        list(to_uint8(batch.masked_frames)),
        list(to_uint8(batch.reference_frames)),
        list(to_uint8(generated)),
    ]


@torch.no_grad()
def latent_std(model: DiffTalkModel, dataset: TalkingHeadDataset, samples: int = 64) -> float:
    """Std of the pre-quantisation latents of ``samples`` target frames spread over the dataset.

    Deterministic (fixed indices, no reference frames involved), so every DDP rank gets the same value.
    """
    picks = torch.linspace(0, len(dataset) - 1, min(samples, len(dataset))).round().long().tolist()
    raw = []
    for index in picks:
        sample = dataset[index]
        if sample.target_latents is not None:
            raw.append(sample.target_latents)
        else:
            assert sample.target_frames is not None
            device = next(model.autoencoder.parameters()).device
            raw.append(model.autoencoder.encode(sample.target_frames[None].to(device))[0].float().cpu())
    std = float(torch.stack(raw).std())
    if not std > 0:
        raise ValueError("the training latents have zero variance: is the autoencoder trained and the data varied?")
    return std


def _fixed_batch(config: DiffTalkConfig, size: int) -> TalkingHeadBatch:
    """A deterministic batch for sample grids: held-out identities when the dataset has them."""
    model = config.model
    kwargs: dict[str, Any] = {
        "image_size": model.autoencoder.image_size,
        "context_frames": model.audio_encoder.context_frames,
        "feature_backend": config.data.feature_backend,
        "reference_min_distance": config.data.reference_min_distance,
        "seed": config.train.seed,
    }
    try:
        dataset = TalkingHeadDataset(config.data.data_dir, split="test", **kwargs)
    except ValueError:
        dataset = TalkingHeadDataset(config.data.data_dir, split="train", **kwargs)
    picks = torch.linspace(0, len(dataset) - 1, size).round().long().tolist()
    return collate_samples([dataset[i] for i in picks])


def training_batches(
    fabric: Any,
    config: DiffTalkConfig,
    autoencoder: Autoencoder,
    seed: int,
    batch_size: int,
    latent_cache: bool,
    progress: bool,
) -> Batches:
    """The training split of ``config.data`` as :class:`Batches` of ``batch_size`` per rank, with its clips'
    latents cached by ``autoencoder`` first when ``latent_cache`` (rank 0 builds, every rank reads)."""
    fingerprint = None
    if latent_cache:
        clips = open_clips(config.data.data_dir, "train")
        if fabric.is_global_zero:
            fingerprint = build_latent_cache(clips, autoencoder, device=fabric.device, progress=progress)
        fingerprint = fabric.broadcast(fingerprint, src=0)
    dataset = TalkingHeadDataset(
        config.data.data_dir,
        split="train",
        image_size=config.model.autoencoder.image_size,
        context_frames=config.model.audio_encoder.context_frames,
        feature_backend=config.data.feature_backend,
        reference_min_distance=config.data.reference_min_distance,
        seed=seed,
        latent_cache=fingerprint,
    )
    return Batches.build(fabric, dataset, batch_size, seed, config.data.num_workers, collate_samples)


def train_diffusion(config: DiffTalkConfig, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train (or resume training of) the diffusion model of ``config``, driven by ``config.train`` and
    ``config.data`` (``resume``, ``progress``: see :mod:`difftalk.train`)."""
    train = config.train
    fabric, run = open_run(train)
    rank, world = fabric.global_rank, fabric.world_size
    torch.manual_seed(train.seed)  # the same initial weights on every rank

    model = DiffTalkModel(config.model)
    _load_autoencoder(model, train.autoencoder)
    torch.manual_seed(train.seed + rank)
    batches = training_batches(
        fabric, config, model.autoencoder, train.seed, train.batch_size, train.latent_cache, progress
    )
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
    fabric_model, optimizer = fabric.setup(model, optimizer)
    fabric_model.mark_forward_method("training_loss")
    trainable = [p for p in model.parameters() if p.requires_grad]
    ema = EMA([(n, p) for n, p in model.named_parameters() if p.requires_grad], train.ema_decay)
    generator = torch.Generator().manual_seed(train.seed * 7919 + rank)
    state = TrainingState(
        fabric,
        run,
        config,
        {"model": TrainableWeights(model), "optimizer": optimizer, "ema": ema},
        train.seed,
        values=lambda: {"latent_scale": model.config.latent_scale},
        generator=generator,
    )

    resumed = state.restore() if resume else None
    if resumed is not None:
        model.config = replace(model.config, latent_scale=float(resumed.get("latent_scale", 1.0)))
        logger.info("latent scale %.4f (from the training state)", model.config.latent_scale)
    else:
        std = latent_std(model, batches.dataset)
        if train.scale_latents_by_std:
            model.config = replace(model.config, latent_scale=1.0 / std)
            logger.info("latent std %.4f → model.latent_scale %.4f (train.scale_latents_by_std)", std, 1.0 / std)
        elif not 0.5 <= std * model.config.latent_scale <= 2.0:
            logger.warning(
                "scaled latents have std %.3f, far from the noise's 1.0: samples will suffer; set "
                "train.scale_latents_by_std=true (or model.latent_scale ≈ %.3f)",
                std * model.config.latent_scale,
                1.0 / std,
            )
        info = {"trainable_parameters": sum(p.numel() for p in trainable), "latent_scale": model.config.latent_scale}
        run.write_run_info(config, world, info)
    logger.info(
        "training on %s × %d (%s), %d samples, %d steps, batch %d per device",
        fabric.device,
        world,
        fabric.strategy.__class__.__name__,
        len(batches.dataset),
        train.steps,
        train.batch_size,
    )

    sample_batch = _fixed_batch(config, SAMPLE_GRID_SIZE) if fabric.is_global_zero and train.sample_every else None
    weighting = LossWeighting(train.min_snr_gamma, train.mask_loss_outside, train.mask_loss_dilate)
    by_range = LossByRange(config.model.diffusion.num_train_timesteps)

    def step_fn(batch: TalkingHeadBatch, index: int) -> StepOutput:
        batch = batch.to(fabric.device)
        clean, mask = _targets(model, batch)
        output = fabric_model.training_loss(
            conditions=_conditions(model, batch, clean, mask),
            target_latents=clean,
            generator=generator,
            latent_mouth_mask=mask,
            weighting=weighting,
        )
        by_range.add(output.timesteps, output.mse_inside, output.mse_outside)
        return StepOutput(output.loss, after=lambda: ema.update(trainable))

    def samples(step: int) -> None:
        if sample_batch is not None:
            _write_samples(model, ema, sample_batch.to(fabric.device), run, step, train.sample_steps)

    def export(step: int) -> None:
        """The EMA weights as an inference checkpoint (``DiffTalkModel.from_pretrained``)."""
        model_copy = DiffTalkModel(model.config)
        model_copy.load_state_dict(model.state_dict())
        ema.copy_to(model_copy)
        model_copy.save_pretrained(
            run.checkpoints / "model",
            step=step,
            feature_backend=config.data.feature_backend,
            sampler_steps=config.sampler.num_steps,
        )

    result = fit(
        fabric,
        state,
        batches,
        step_fn,
        run=run,
        settings=train,
        optimizer=optimizer,
        section="train",
        samples_per_step=train.batch_size,
        progress=progress,
        learning_rate=linear_warmup(train.learning_rate, train.warmup_steps),
        clip=(fabric_model, train.grad_clip),
        hooks=[Every(train.sample_every, samples)],
        export=export,
        on_log=by_range.means,
    )
    _record_final(fabric, model, run, result.step, result.last_loss)
    if train.sample_every and result.step % train.sample_every != 0:
        samples(result.step)
    run.close()
    return TrainResult(run.path, result.step, result.last_loss, result.stopped, run.checkpoints / "model")


def _record_final(fabric: Any, model: DiffTalkModel, run: RunDir, step: int, loss: float) -> None:
    """final.json: the step, the loss and every rank's weight checksum (replicas must agree under DDP)."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for parameter in model.trainable_parameters():
        digest.update(parameter.detach().float().cpu().numpy().tobytes())
    local = torch.tensor(list(digest.digest()[:8]), dtype=torch.float64, device=fabric.device)
    gathered = fabric.all_gather(local) if fabric.world_size > 1 else local[None]
    checksums = [bytes(int(v) for v in row.tolist()).hex() for row in gathered.reshape(fabric.world_size, -1).cpu()]
    if fabric.is_global_zero:
        info = {"step": step, "loss": loss, "world_size": fabric.world_size, "weight_checksums": checksums}
        with open(run.path / "final.json", "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
        if len(set(checksums)) != 1:
            logger.error("replicas diverged: weight checksums %s", checksums)


def _write_samples(model: DiffTalkModel, ema: EMA, batch: TalkingHeadBatch, run: RunDir, step: int, steps: int) -> None:
    """Sample grid with the EMA weights (swapped in, then restored)."""
    backup = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    ema.copy_to(model)
    rows = sample_grid(model, batch, steps, seed=step)
    with torch.no_grad():
        for p, saved in zip((p for p in model.parameters() if p.requires_grad), backup, strict=True):
            p.copy_(saved)
    path = save_image_grid(run.samples / f"step_{step:07d}.png", rows)
    writer = run.tensorboard()
    if writer is not None:
        import numpy as np

        writer.add_image(
            "samples", np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0), step, dataformats="HWC"
        )
    logger.info("samples → %s", path)
