"""Configs of the SyncNet lip-sync expert: its architecture (saved beside its weights) and its training.

The architecture is data: a tuple of :class:`ConvSpec` per stream, with the ``syncnet_v2`` (public
syncnet_python) and ``small`` (CPU, synthetic crops) presets. ``models.syncnet`` builds the network from
it; ``train.syncnet`` trains it with :class:`SyncNetTrainConfig` (YAML section ``syncnet_train``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from difftalk.config.fields import require, require_at_least
from difftalk.config.training import FabricConfig, Precision

MFCC_STEPS_PER_FRAME = 4
"""MFCC steps (100 Hz) per video frame (25 fps)."""


@dataclass(frozen=True)
class ConvSpec:
    """One conv block: ``Conv(channels, kernel, stride, padding) → BatchNorm → ReLU [→ MaxPool]``.

    Tuples have one entry per spatial dimension of the stream (3 for the visual stream: ``(t, h, w)``;
    2 for the audio stream: ``(mfcc, time)``). An empty tuple means 1 (stride), 0 (padding), the pool
    kernel (pool stride) or "no pool" (pool kernel).
    """

    channels: int
    """Output channels of the convolution."""
    kernel: tuple[int, ...]
    """Convolution kernel size."""
    stride: tuple[int, ...] = ()
    """Convolution stride (empty: 1)."""
    padding: tuple[int, ...] = ()
    """Zero padding (empty: 0)."""
    pool_kernel: tuple[int, ...] = ()
    """Max-pool kernel after the ReLU (empty: no pool)."""
    pool_stride: tuple[int, ...] = ()
    """Max-pool stride (empty: the pool kernel)."""
    pool_padding: tuple[int, ...] = ()
    """Max-pool padding (empty: 0)."""

    def __post_init__(self) -> None:
        require(self.channels >= 1, "channels", f"must be >= 1, got {self.channels}")
        dims = len(self.kernel)
        for name in ("stride", "padding", "pool_kernel", "pool_stride", "pool_padding"):
            value = getattr(self, name)
            require(
                not value or len(value) == dims, name, f"{value} must have {dims} entries like kernel {self.kernel}"
            )
        require(not self.pool_stride or bool(self.pool_kernel), "pool_stride", "is set but pool_kernel is empty")

    def resolved(self) -> tuple[tuple[int, ...], ...]:
        """``(kernel, stride, padding, pool_kernel, pool_stride, pool_padding)`` with defaults filled in."""
        dims = len(self.kernel)
        stride = self.stride or (1,) * dims
        padding = self.padding or (0,) * dims
        pool_stride = self.pool_stride or self.pool_kernel
        pool_padding = self.pool_padding or ((0,) * dims if self.pool_kernel else ())
        return self.kernel, stride, padding, self.pool_kernel, pool_stride, pool_padding


def _v(
    channels: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...] = (),
    padding: tuple[int, ...] = (),
    pool: tuple[int, ...] = (),
    pool_stride: tuple[int, ...] = (),
    pool_padding: tuple[int, ...] = (),
) -> ConvSpec:
    return ConvSpec(channels, kernel, stride, padding, pool, pool_stride, pool_padding)


SYNCNET_V2_VISUAL = (
    _v(96, (5, 7, 7), (1, 2, 2), (0, 0, 0), (1, 3, 3), (1, 2, 2)),
    _v(256, (1, 5, 5), (1, 2, 2), (0, 1, 1), (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    _v(256, (1, 3, 3), (), (0, 1, 1)),
    _v(256, (1, 3, 3), (), (0, 1, 1)),
    _v(256, (1, 3, 3), (), (0, 1, 1), (1, 3, 3), (1, 2, 2)),
    _v(512, (1, 6, 6)),
)
"""The visual stream of syncnet_python's ``S.netcnnlip`` (input ``(B, 3, 5, 224, 224)``)."""
SYNCNET_V2_AUDIO = (
    _v(64, (3, 3), (), (1, 1), (1, 1), (1, 1)),
    _v(192, (3, 3), (), (1, 1), (3, 3), (1, 2)),
    _v(384, (3, 3), (), (1, 1)),
    _v(256, (3, 3), (), (1, 1)),
    _v(256, (3, 3), (), (1, 1), (3, 3), (2, 2)),
    _v(512, (5, 4)),
)
"""The audio stream of syncnet_python's ``S.netcnnaud`` (input ``(B, 1, 13, 20)``)."""

SMALL_VISUAL = (
    _v(16, (5, 5, 5), (1, 2, 2), (0, 2, 2)),
    _v(32, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    _v(64, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    _v(128, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    _v(256, (1, 2, 4)),
)
"""Small visual stream for ``(B, 3, 5, 32, 64)`` (lower half of a 64² crop); about 5 M MACs per window."""
SMALL_AUDIO = (
    _v(16, (3, 3), (), (1, 1)),
    _v(32, (3, 3), (1, 2), (1, 1)),
    _v(64, (3, 3), (2, 2), (1, 1)),
    _v(128, (3, 3), (2, 2), (1, 1)),
    _v(256, (4, 3)),
)
"""Small audio stream for ``(B, 1, 13, 20)``."""


def conv_output_shape(specs: tuple[ConvSpec, ...], shape: tuple[int, ...], name: str = "layers") -> tuple[int, ...]:
    """Spatial shape after the conv blocks (floor arithmetic, as PyTorch).

    Raises:
        ConfigError: naming ``name[index]`` of a block whose kernel does not fit the input or that
            shrinks it to nothing.
    """
    for index, spec in enumerate(specs):
        kernel, stride, padding, pool, pool_stride, pool_padding = spec.resolved()
        where = f"{name}[{index}]"
        require(len(kernel) == len(shape), where, f"kernel {kernel} does not match a {len(shape)}-d input")
        shape = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(shape, kernel, stride, padding, strict=True))
        if pool:
            shape = tuple(
                (n + 2 * p - k) // s + 1 for n, k, s, p in zip(shape, pool, pool_stride, pool_padding, strict=True)
            )
        require(min(shape) >= 1, where, f"{spec} shrinks the input to {shape}; use a larger input or smaller kernels")
    return shape


@dataclass(frozen=True)
class SyncNetConfig:
    """Architecture and input convention of a SyncNet expert (saved beside its weights)."""

    image_size: int = 64
    """Face crops are resized to this square side before the region is cut."""
    region: Literal["full", "lower_half"] = "lower_half"
    """Which part of the resized crop the visual stream sees."""
    color: Literal["bgr255", "rgb_signed"] = "rgb_signed"
    """``bgr255``: BGR in [0, 255] (syncnet_python); ``rgb_signed``: RGB in [-1, 1]."""
    num_frames: int = 5
    """Frames per visual window (the MFCC window is ``4 * num_frames`` steps)."""
    num_mfcc: int = 13
    """MFCC coefficients per step (python_speech_features default)."""
    visual_layers: tuple[ConvSpec, ...] = SMALL_VISUAL
    """Conv blocks of the visual stream (3-d kernels)."""
    audio_layers: tuple[ConvSpec, ...] = SMALL_AUDIO
    """Conv blocks of the audio stream (2-d kernels)."""
    head_hidden: int = 256
    """Width of the hidden layer of both heads."""
    embedding_dim: int = 128
    """Embedding size."""
    normalize: bool = True
    """L2-normalise embeddings (then distances lie in [0, 2]); syncnet_v2 does not."""

    def __post_init__(self) -> None:
        require_at_least(self, ("image_size",), 8)
        require_at_least(self, ("num_frames", "num_mfcc", "head_hidden", "embedding_dim"), 1)
        require(bool(self.visual_layers), "visual_layers", "must not be empty")
        require(bool(self.audio_layers), "audio_layers", "must not be empty")
        conv_output_shape(self.visual_layers, self.visual_input_shape[1:], "visual_layers")
        conv_output_shape(self.audio_layers, self.audio_input_shape[1:], "audio_layers")

    @property
    def mfcc_steps(self) -> int:
        """MFCC steps per window (4 per frame)."""
        return MFCC_STEPS_PER_FRAME * self.num_frames

    @property
    def visual_input_shape(self) -> tuple[int, int, int, int]:
        """``(3, T, h, w)`` of one visual window."""
        height = self.image_size // 2 if self.region == "lower_half" else self.image_size
        return 3, self.num_frames, height, self.image_size

    @property
    def audio_input_shape(self) -> tuple[int, int, int]:
        """``(1, num_mfcc, 4T)`` of one audio window."""
        return 1, self.num_mfcc, self.mfcc_steps


def syncnet_preset(name: Literal["syncnet_v2", "small"]) -> SyncNetConfig:
    """The ``syncnet_v2`` (public syncnet_python) or ``small`` (CPU, synthetic crops) architecture."""
    if name == "syncnet_v2":
        return SyncNetConfig(
            image_size=224,
            region="full",
            color="bgr255",
            num_frames=5,
            num_mfcc=13,
            visual_layers=SYNCNET_V2_VISUAL,
            audio_layers=SYNCNET_V2_AUDIO,
            head_hidden=512,
            embedding_dim=1024,
            normalize=False,
        )
    if name == "small":
        return SyncNetConfig()
    raise ValueError(f"unknown SyncNet preset {name!r}; choose 'syncnet_v2' or 'small'")


@dataclass(frozen=True)
class SyncNetTrainConfig(FabricConfig):
    """Training of the SyncNet expert (``difftalk train-syncnet``, YAML section ``syncnet_train``)."""

    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    """Architecture (default: the ``small`` preset)."""
    loss: Literal["multiway", "bce"] = "multiway"
    """``multiway``: cross-entropy over shifted audio candidates; ``bce``: Wav2Lip's cosine BCE."""
    split: str = "train"
    """Dataset split to train on (``train``, ``test`` or ``all``)."""
    eval_split: str = "test"
    """Split of the validation clips (falls back to ``split`` when it is empty)."""
    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 32
    """Windows per device per step."""
    learning_rate: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    candidates: int = 6
    """``multiway``: audio shifts −S … S frames are the candidates."""
    temperature: float = 0.1
    """``multiway``: logits are cosine / temperature."""
    min_shift: int = 3
    """``bce``: negatives are shifted by at least this many frames ..."""
    max_shift: int = 15
    """... and at most this many."""
    other_clip_prob: float = 0.3
    """``bce``: probability that a negative takes its audio from another clip instead."""
    num_workers: int = 2
    """DataLoader workers (0 = load in the training process)."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    precision: Precision = "32-true"
    """Full precision by default (``auto`` picks bf16-mixed on GPUs that support it)."""
    log_every: int = 25
    """Steps between metrics.csv rows."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and at the end)."""
    eval_every: int = 500
    """Steps between validations (0 = only at the end)."""
    eval_clips: int = 4
    """Validation clips."""
    eval_shift: int = 5
    """Validation delays the audio by this many frames and expects offset −eval_shift."""
    data_dir: str = "data/synth"
    """The prepared dataset (25 fps) to train on (``--data``)."""
    run_dir: str = "runs/syncnet"
    """Run folder: resolved config, metrics.csv, checkpoints (``--run-dir``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, ("steps", "candidates", "log_every", "checkpoint_every", "eval_shift"), 1)
        require_at_least(self, ("batch_size",), 2)
        require_at_least(self, ("num_workers", "eval_every", "eval_clips"), 0)
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(1 <= self.min_shift <= self.max_shift, "min_shift", f"must be in [1, max_shift={self.max_shift}]")
        require(0.0 <= self.other_clip_prob <= 1.0, "other_clip_prob", "must be in [0, 1]")
