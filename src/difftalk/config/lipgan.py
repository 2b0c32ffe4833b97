"""Configs of the LipGAN baseline: the generator's architecture (saved beside its weights) and its training.

``models.lipgan`` builds the generator from :class:`LipGANConfig`; ``train.lipgan`` trains it with
:class:`LipGANTrainConfig` (YAML section ``lipgan_train``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from difftalk.config.fields import require, require_at_least
from difftalk.config.training import FabricConfig, Precision
from difftalk.constants import SILENCE_HOLD_FRAMES, FeatureBackend

GROUPS = 8
"""GroupNorm groups of the generator: every channel count must be a multiple of this."""


@dataclass(frozen=True)
class LipGANConfig:
    """Architecture of the LipGAN generator (saved beside its weights)."""

    image_size: int = 128
    """Side S of the square face crops (the dataset's crops are resized to it)."""
    feature_dim: int = 80
    """F, audio features per step (80 mel, 384 Whisper, 29 DeepSpeech)."""
    window: int = 16
    """Feature steps per frame window (16 for every backend, docs/formats.md)."""
    context_frames: int = 1
    """T, audio windows per sample, centred on the target frame (odd; 1 = the target's own window)."""
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    """Face encoder widths per level; level 0 is full resolution, each later level halves the side."""
    res_blocks: int = 1
    """Residual blocks per encoder/decoder level below full resolution."""
    audio_channels: tuple[int, ...] = (32, 64, 128, 256)
    """Audio encoder conv widths (the first keeps the size, each later one has stride 2)."""
    audio_dim: int = 256
    """Size of the audio vector."""

    def __post_init__(self) -> None:
        levels = len(self.channels)
        require(levels >= 2, "channels", f"needs at least 2 levels, got {self.channels}")
        require(bool(self.audio_channels), "audio_channels", "must not be empty")
        for name in ("channels", "audio_channels"):
            widths = getattr(self, name)
            require(
                all(c >= GROUPS and c % GROUPS == 0 for c in widths),
                name,
                f"must be multiples of {GROUPS}, got {widths}",
            )
        factor = 2 ** (levels - 1)
        require(
            self.image_size >= factor and self.image_size % factor == 0,
            "image_size",
            f"{self.image_size} must be a multiple of 2^(len(channels) - 1) = {factor}",
        )
        require_at_least(self, ("feature_dim", "window", "audio_dim"), 1)
        require(
            self.context_frames >= 1 and self.context_frames % 2 == 1,
            "context_frames",
            f"must be odd and >= 1, got {self.context_frames}",
        )
        require_at_least(self, ("res_blocks",), 0)

    @property
    def bottleneck_size(self) -> int:
        """Side of the lowest-resolution feature map."""
        return self.image_size // 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class LipGANTrainConfig(FabricConfig):
    """Training of the LipGAN baseline (``difftalk train-lipgan``, YAML section ``lipgan_train``)."""

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
    silence_db: float | None = None
    """As ``data.silence_db`` of ``difftalk train``: silent frames get digital silence's features, as at
    inference; None keeps the stored features."""
    silence_hold: int = SILENCE_HOLD_FRAMES
    """As ``data.silence_hold`` of ``difftalk train``."""
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
    data_dir: str = "data/synth"
    """The prepared dataset to train on (``--data``)."""
    run_dir: str = "runs/lipgan"
    """Run folder: resolved config, metrics.csv, previews, checkpoints (``--run-dir``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(
            self,
            ("frames_per_sample", "steps", "batch_size", "discriminator_layers", "log_every", "checkpoint_every"),
            1,
        )
        nonnegative = (
            "reference_min_distance",
            "weight_decay",
            "l1_weight",
            "sync_weight",
            "sync_start",
            "adversarial_weight",
            "adversarial_start",
            "num_workers",
            "eval_every",
            "eval_windows",
        )
        require_at_least(self, nonnegative, 0)
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.discriminator_learning_rate > 0, "discriminator_learning_rate", "must be > 0")
        require(
            self.discriminator_channels >= 8 and self.discriminator_channels % 8 == 0,
            "discriminator_channels",
            f"must be a multiple of 8, got {self.discriminator_channels}",
        )
