"""Configs of the data pipeline and of training (diffusion model and autoencoder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difftalk.config.fields import require as _require
from difftalk.config.fields import require_at_least
from difftalk.constants import SILENCE_HOLD_FRAMES, SILENCE_HOLD_MAX, FeatureBackend

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
Accelerator = Literal["auto", "cpu", "cuda", "mps"]


def _require_positive(config: object, names: tuple[str, ...]) -> None:
    """Each named integer field of ``config`` must be >= 1."""
    require_at_least(config, names, 1)


@dataclass(frozen=True)
class FabricConfig:
    """Where a trainer runs (Lightning Fabric); every ``train-*`` config inherits these flat fields."""

    precision: Precision = "auto"
    """``auto``: bf16-mixed on GPUs that support it, else 32-true."""
    accelerator: Accelerator = "auto"
    devices: int = 1
    """Devices per node (GPUs, or CPU processes for DDP on CPU)."""
    num_nodes: int = 1
    strategy: Literal["auto", "ddp"] = "auto"
    """``auto`` becomes DDP when ``devices · num_nodes > 1``."""

    def __post_init__(self) -> None:
        _require_positive(self, ("devices", "num_nodes"))


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared dataset is and how training samples are drawn from it."""

    data_dir: str = "data/synth"
    """A prepared dataset folder (``manifest.json`` + ``clips/``), see docs/formats.md."""
    feature_backend: FeatureBackend = "mel"
    """Which ``features/<backend>.npy`` of each clip feeds the audio encoder."""
    reference_min_distance: int = 60
    """The reference frame is drawn, anew for every sample, from frames at least this far away."""
    num_workers: int = 2
    """DataLoader worker processes (0 = load in the training process)."""
    silence_db: float | None = None
    """Frames whose audio (RMS over ±20 ms) is below this level get the feature window of digital
    silence, the rule generation applies (``generate --silence-db``, −45 by default), so the model
    sees in training what it is given at inference. None keeps the stored features (official)."""
    silence_hold: int = SILENCE_HOLD_FRAMES
    """With ``silence_db``: a frame counts as silent only if the frames within ± this many are too
    (``generate --silence-hold``)."""

    def __post_init__(self) -> None:
        _require(self.reference_min_distance >= 0, "reference_min_distance", "must be >= 0")
        _require(self.num_workers >= 0, "num_workers", "must be >= 0")
        _require(0 <= self.silence_hold <= SILENCE_HOLD_MAX, "silence_hold", f"must be 0-{SILENCE_HOLD_MAX} frames")


@dataclass(frozen=True)
class TrainConfig(FabricConfig):
    """Diffusion training (``difftalk train``); the autoencoder stays frozen."""

    autoencoder: str = ""
    """Checkpoint folder of the trained autoencoder (``difftalk train-autoencoder`` or ``convert-ldm-vq``).
    Empty means a randomly initialised one, which is only useful for tests."""
    steps: int = 100_000
    """Optimiser steps."""
    latent_cache: bool = True
    """Encode every frame (and its masked version) once with the frozen autoencoder and train on the
    cached latents (identical inputs, 3 fewer encoder passes per sample)."""
    scale_latents_by_std: bool = True
    """At a fresh start, set ``model.latent_scale`` to 1/std of the training latents (LDM
    ``scale_by_std``). A trained VQ autoencoder's latents can have std ≈ 0.2: unscaled, the noise
    swamps them at most timesteps and samples come out poor. Off keeps ``model.latent_scale``
    (official: 1.0 with the LDM VQ-f4 weights)."""
    batch_size: int = 8
    """Samples per device per step."""
    learning_rate: float = 6.4e-5
    """AdamW learning rate (official: 1e-6 × 64 global batch)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps (then constant, as the official code)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (official: 0.1); 0 disables."""
    ema_decay: float = 0.9999
    """EMA decay of all trained weights (with the LDM warm-up min(decay, (1+n)/(10+n)))."""
    seed: int = 0
    log_every: int = 10
    """Steps between metrics.csv / TensorBoard rows."""
    checkpoint_every: int = 1000
    """Steps between training-state checkpoints (also written at the end and on SIGTERM)."""
    sample_every: int = 1000
    """Steps between PNG sample grids (target | masked | reference | generated); 0 disables."""
    sample_steps: int = 20
    """DDIM steps for the sample grids."""
    min_snr_gamma: float = 0.0
    """Min-SNR-γ loss weighting over t (Hang et al. 2023): each sample's ε-MSE is weighted by
    min(SNR(t), γ) / SNR(t), so the low-noise steps (t < 100: ≈70% of a uniform ε-loss, where the mouth is
    already decided) stop dominating. 0 = off (paper: uniform ε-MSE); 5 is the usual value."""
    mask_loss_outside: float = 1.0
    """Weight of the latent cells outside the (dilated) mouth mask in the ε-MSE, relative to 1 inside;
    inference never generates them (they are re-noised from the known frame). 1 = uniform (paper)."""
    mask_loss_dilate: int = 1
    """Latent cells by which the mouth mask is grown for ``mask_loss_outside`` (the blend seam)."""
    audio_dropout: float = 0.0
    """Probability that a training sample sees the null audio (the audio encoder's output zeroed) instead of
    its own, so the model also learns the audio-free prediction that audio guidance (``generate
    --audio-guidance``, classifier-free guidance on the audio) pushes away from. 0 = off (paper)."""
    init_from: str = ""
    """A ``difftalk train`` checkpoint folder (``checkpoints/model``, or a hub repo id) that starts a NEW run:
    its weights (autoencoder included), latent scale and ``model`` section replace the config's — fine-tuning.
    ``autoencoder`` must then be empty. A resumed run restores its own state instead."""
    syncnet: str = ""
    """The lip-sync expert of the sync loss (a ``train-syncnet`` folder or ``syncnet_v2.model``). Train it on
    the training identities only, and score the result with a DIFFERENT expert (another seed or other
    identities): LSE by the expert a model was optimised against overstates its sync."""
    sync_weight: float = 0.0
    """Weight of the expert sync loss ``−log P_sync`` (Wav2Lip's BCE) on the one-step x̂₀ mouth: x̂₀ inside the
    latent mouth mask, the true latents outside, decoded and shown to the expert with the window's MFCC.
    0 = off (the paper). On, a batch is ``batch_size / T`` windows of the expert's T consecutive frames of one
    clip (one reference per window, one t per window), so ``batch_size`` must be a multiple of T."""
    sync_max_t: int = 500
    """The sync loss applies to windows drawn with t below this (x̂₀ at high noise is a blur the expert cannot
    read); the ε-loss applies at every t."""
    run_dir: str = "runs/difftalk"
    """Run folder: resolved config, git SHA, metrics.csv, TensorBoard logs, samples, checkpoints."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive(self, ("steps", "batch_size", "log_every", "checkpoint_every", "sample_steps"))
        _require(self.sync_weight >= 0, "sync_weight", "must be >= 0 (0 = off)")
        _require(self.sync_max_t >= 1, "sync_max_t", "must be >= 1")
        _require(
            self.sync_weight == 0 or bool(self.syncnet),
            "syncnet",
            "is empty but sync_weight > 0: give the expert's folder (difftalk train-syncnet) or set sync_weight=0",
        )
        _require(
            not (self.init_from and self.autoencoder),
            "autoencoder",
            "must be empty with init_from (the run starts from that checkpoint's autoencoder)",
        )
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(0.0 <= self.ema_decay < 1.0, "ema_decay", "must be in [0, 1)")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        _require(self.sample_every >= 0, "sample_every", "must be >= 0")
        _require(self.min_snr_gamma >= 0, "min_snr_gamma", "must be >= 0 (0 = off)")
        _require(0.0 <= self.mask_loss_outside <= 1.0, "mask_loss_outside", "must be in [0, 1] (1 = uniform)")
        _require(self.mask_loss_dilate >= 0, "mask_loss_dilate", "must be >= 0")
        _require(0.0 <= self.audio_dropout < 1.0, "audio_dropout", "must be in [0, 1) (0 = off)")


@dataclass(frozen=True)
class AutoencoderTrainConfig(FabricConfig):
    """Autoencoder training (``difftalk train-autoencoder``): L1 + SSIM + codebook (+ LPIPS, + GAN)."""

    steps: int = 50_000
    batch_size: int = 8
    learning_rate: float = 4.5e-6 * 8
    """AdamW learning rate (LDM: 4.5e-6 × batch)."""
    l1_weight: float = 1.0
    ssim_weight: float = 0.2
    """Weight of (1 − MS-SSIM) (plain SSIM for crops too small for MS-SSIM)."""
    codebook_weight: float = 1.0
    lpips_weight: float = 1.0
    """Used only when LPIPS backbone weights are found (``lpips_weights``); otherwise skipped and logged."""
    lpips_weights: str = ""
    """Folder with LPIPS weights (see difftalk.metrics.lpips); empty = look in the default places."""
    adversarial_weight: float = 0.0
    """PatchGAN hinge loss weight (0 = off)."""
    adversarial_start: int = 10_000
    """Step at which the adversarial term starts."""
    color_augment: bool = True
    """Random channel permutation, per-channel gain/offset and mirroring of every training batch
    (``data.transforms.augment_colours``): the autoencoder must encode identities it never saw."""
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    sample_every: int = 1000
    run_dir: str = "runs/autoencoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_positive(self, ("steps", "batch_size", "log_every", "checkpoint_every"))
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        for name in ("l1_weight", "ssim_weight", "codebook_weight", "lpips_weight", "adversarial_weight"):
            _require(getattr(self, name) >= 0, name, "must be >= 0")
