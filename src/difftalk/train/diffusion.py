"""``difftalk train``: train E_A, E_L and the UNet with the ε-MSE loss, the autoencoder frozen.

setup → fit: Fabric (any device count), AdamW, optional linear warm-up, gradient clipping, EMA,
logging every N steps, PNG sample grids (target | masked | reference | generated, EMA weights,
masked-z_T DDIM), atomic checkpoints every N steps / at the end / on SIGTERM, exact resume.

Options beyond the paper's ε-MSE (``TrainConfig``): min-SNR-γ and mouth-weighted ε-MSE, a start from a
trained checkpoint (``init_from``) and an expert sync loss on the one-step x̂₀ mouth (``sync_weight``,
batches of consecutive-frame windows from ``train.windows``).

Files in ``<run_dir>/checkpoints``: ``training_state.pt`` (everything needed to resume) and
``model/`` (EMA weights as an inference checkpoint, ``DiffTalkModel.from_pretrained``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from difftalk.checkpoint import read_checkpoint_meta, resolve_checkpoint_dir, weights_sha256
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
from difftalk.models.lipgan import sync_probability
from difftalk.models.syncnet import SyncNet, load_syncnet
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
from difftalk.train.windows import FrameWindows, flatten_windows

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


def open_checkpoint_model(source: str, feature_backend: str, role: str) -> tuple[DiffTalkModel, str]:
    """A trained DiffTalk checkpoint (folder or hub repo id) and the SHA-256 of its weights file.

    Raises:
        ValueError: its audio features differ from ``feature_backend`` (``role`` names the option in the message).
    """
    directory = resolve_checkpoint_dir(source)
    model = DiffTalkModel.from_pretrained(directory)
    backend = read_checkpoint_meta(directory, DiffTalkModel.KIND).get("extra", {}).get("feature_backend")
    if backend is not None and backend != feature_backend:
        raise ValueError(
            f"{role} {source} was trained on '{backend}' audio features, but data.feature_backend is "
            f"'{feature_backend}'; set data.feature_backend={backend}"
        )
    return model, weights_sha256(directory)


def _open_expert(train_config: Any, device: torch.device) -> SyncNet | None:
    """The frozen sync expert of ``train.syncnet`` when the sync loss is on, else None."""
    if train_config.sync_weight <= 0:
        return None
    expert = load_syncnet(train_config.syncnet, device=device).eval().requires_grad_(False)
    frames = expert.config.num_frames
    if train_config.batch_size % frames:
        raise ValueError(
            f"train.batch_size {train_config.batch_size} is not a multiple of the sync expert's {frames}-frame "
            f"window (the sync loss trains on whole windows); use {max(1, train_config.batch_size // frames) * frames}"
        )
    logger.info(
        "sync loss on: expert %s (%d-frame windows), weight %g, t < %d",
        train_config.syncnet,
        frames,
        train_config.sync_weight,
        train_config.sync_max_t,
    )
    return expert


def expert_sync_loss(
    model: DiffTalkModel,
    expert: SyncNet,
    predicted_clean: torch.Tensor,
    clean: torch.Tensor,
    mask: torch.Tensor,
    mfcc: torch.Tensor,
    picked: torch.Tensor,
) -> torch.Tensor:
    """Wav2Lip's expert loss ``−log P_sync`` on the one-step x̂₀ of whole windows.

    Args:
        predicted_clean / clean: ``(W·T, C, h, w)`` x̂₀ and the true latents, window-major.
        mask: ``(W·T, 1, h, w)`` latent mouth mask: x̂₀ inside, the true latents outside (what inference makes).
        mfcc: ``(W, 1, 13, 4T)`` the windows' MFCC.
        picked: ``(W,)`` bool, the windows to score (at least one).

    Returns:
        Scalar mean ``−log P_sync`` over the picked windows, differentiable with respect to x̂₀.
    """
    window = clean.shape[0] // mfcc.shape[0]
    frames = picked.repeat_interleave(window)
    inside = mask[frames].to(clean.dtype)
    composite = predicted_clean[frames] * inside + clean[frames] * (1 - inside)
    pixels = model.decode_latents(composite, differentiable=True)
    probability = sync_probability(expert, pixels.unflatten(0, (-1, window)), mfcc[picked])
    return -torch.log(probability).mean()


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
        model.make_denoiser(conditions, mouth_mask=mask),
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
        "silence_db": config.data.silence_db,
        "silence_hold": config.data.silence_hold,
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
    window: int = 0,
) -> Batches:
    """The training split of ``config.data`` as :class:`Batches` of ``batch_size`` per rank, with its clips'
    latents cached by ``autoencoder`` first when ``latent_cache`` (rank 0 builds, every rank reads).

    ``window`` > 0: batches of ``batch_size / window`` windows of ``window`` consecutive frames with their MFCC
    (``train.windows.FrameWindows``, collated ``(W, T, ...)``) instead of single frames."""
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
        silence_db=config.data.silence_db,
        silence_hold=config.data.silence_hold,
    )
    if window:
        windows = FrameWindows(dataset, window, seed, with_mfcc=True, where=f"{config.data.data_dir} (train)")
        return Batches.build(fabric, windows, batch_size // window, seed, config.data.num_workers, collate_samples)
    return Batches.build(fabric, dataset, batch_size, seed, config.data.num_workers, collate_samples)


def train_diffusion(config: DiffTalkConfig, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train (or resume training of) the diffusion model of ``config``, driven by ``config.train`` and
    ``config.data`` (``resume``, ``progress``: see :mod:`difftalk.train`)."""
    train = config.train
    init, init_sha256 = None, None
    sampler_steps = config.sampler.num_steps
    audio_dropout = train.audio_dropout  # recorded in the export: audio guidance needs a model that saw null audio
    if train.init_from:
        init, init_sha256 = open_checkpoint_model(train.init_from, config.data.feature_backend, "train.init_from")
        config = replace(config, model=init.config)
        start_meta = read_checkpoint_meta(resolve_checkpoint_dir(train.init_from), DiffTalkModel.KIND)
        # the start's recommended step count was measured for it (the shipped model: 5); a fine-tune keeps it
        sampler_steps = int(start_meta.get("extra", {}).get("sampler_steps", sampler_steps))
        audio_dropout = audio_dropout or float(start_meta.get("extra", {}).get("audio_dropout", 0.0))
    fabric, run = open_run(train)
    rank, world = fabric.global_rank, fabric.world_size
    torch.manual_seed(train.seed)  # the same initial weights on every rank

    model = DiffTalkModel(config.model)
    if init is not None:
        model.load_state_dict(init.state_dict(), strict=True)
        logger.info("starting from %s (weights sha256 %s)", train.init_from, init_sha256)
        del init
    else:
        _load_autoencoder(model, train.autoencoder)
    expert = _open_expert(train, fabric.device)
    window = expert.config.num_frames if expert is not None else 0
    torch.manual_seed(train.seed + rank)
    batches = training_batches(
        fabric, config, model.autoencoder, train.seed, train.batch_size, train.latent_cache, progress, window
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
    elif train.init_from:
        logger.info("latent scale %.4f (from %s)", model.config.latent_scale, train.init_from)
        info = {"latent_scale": model.config.latent_scale, "init_from": train.init_from, "init_sha256": init_sha256}
        run.write_run_info(config, world, info)
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

    num_timesteps = config.model.diffusion.num_train_timesteps

    def step_fn(batch: TalkingHeadBatch, index: int) -> StepOutput:
        batch = batch.to(fabric.device)
        timesteps = per_window = None
        if window:  # one t per window: the expert judges whole windows
            batch = flatten_windows(batch)
            assert batch.mfcc is not None
            per_window = torch.randint(0, num_timesteps, (batch.mfcc.shape[0],), generator=generator)
            timesteps = per_window.repeat_interleave(window)
        clean, mask = _targets(model, batch)
        output = fabric_model.training_loss(
            conditions=_conditions(model, batch, clean, mask),
            target_latents=clean,
            generator=generator,
            timesteps=timesteps,
            latent_mouth_mask=mask,
            weighting=weighting,
            predict_clean=expert is not None,
            audio_dropout=train.audio_dropout,
        )
        by_range.add(output.timesteps, output.mse_inside, output.mse_outside)
        loss, metrics = output.loss, dict[str, torch.Tensor | float]()
        if expert is not None and per_window is not None:
            picked = per_window < train.sync_max_t
            sync = torch.full((), float("nan"))
            if bool(picked.any()):
                assert output.predicted_clean is not None and batch.mfcc is not None
                sync = expert_sync_loss(
                    model, expert, output.predicted_clean, clean, mask, batch.mfcc, picked.to(clean.device)
                )
                loss = loss + train.sync_weight * sync
            metrics["sync"] = sync.detach()
        return StepOutput(loss, metrics, after=lambda: ema.update(trainable))

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
            sampler_steps=sampler_steps,
            audio_dropout=audio_dropout,
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
