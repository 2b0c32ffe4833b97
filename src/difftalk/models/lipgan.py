"""LipGAN generator: a Wav2Lip-style GAN baseline that regenerates the mouth of one face crop at a time.

Stage ④ (networks) for the Table 3 baseline. Per frame (Prajwal et al., "A Lip Sync Expert Is All You
Need", ACM MM 2020, §3.1; notation: Wav2Lip's ``face_sequences`` = our ``[masked ; reference]``):

* **face encoder** over the 6-channel stack ``[masked target ; reference]`` ``(B, 6, S, S)`` in [-1, 1]:
  a 3×3 stem at full resolution, then one stride-2 conv + residual blocks per level, keeping every
  level's features as skips; the bottleneck has side ``S / 2^(L-1)`` for ``L = len(channels)`` levels;
* **audio encoder** over the audio feature windows ``(B, T, 16, F)`` of the ``T = context_frames``
  frames centred on the target (default T = 1: only the target frame's own 16-step, 320 ms window, as
  Wav2Lip uses one 0.2 s mel window per frame). The T windows are input *channels* of a 2-d conv net
  over (16 steps × F features); adaptive average pooling makes it independent of F (80 mel, 384
  Whisper, 29 DeepSpeech); a linear layer gives the ``audio_dim`` vector;
* **decoder**: the audio vector is projected, tiled over the bottleneck and fused with it; each level
  upsamples ×2, concatenates the encoder skip of that level (U-Net) and fuses; a 3×3 conv + tanh gives
  the *whole* crop ``(B, 3, S, S)`` in [-1, 1]. Only its mouth region is used downstream (the pipeline
  pastes back with the one mouth mask of ``data.masks``).

GroupNorm instead of Wav2Lip's BatchNorm, so training at any batch size and inference at batch size 1
behave the same. The discriminator is ``models.discriminator.PatchDiscriminator`` (reused).

:func:`sync_probability` is how a frozen SyncNet expert scores generated windows (differentiably, with
the same preprocessing as the LSE metric); ``train.lipgan`` minimises ``−log`` of it (Wav2Lip §3.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difftalk.checkpoint import load_pretrained, save_pretrained
from difftalk.config.lipgan import GROUPS, LipGANConfig  # config data; re-exported here for existing imports
from difftalk.models.syncnet import SyncNet, SyncNetConfig

KIND = "LipGANGenerator"


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv → GroupNorm → SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.GroupNorm(GROUPS, out_channels),
        nn.SiLU(),
    )


class ResBlock(nn.Module):
    """``x + conv(conv(x))`` at constant width (Wav2Lip's ``Conv2d(..., residual=True)`` pairs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(GROUPS, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x + self.body(x))


def _level(in_channels: int, out_channels: int, stride: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(_conv(in_channels, out_channels, stride), *(ResBlock(out_channels) for _ in range(blocks)))


class AudioWindowEncoder(nn.Module):
    """Audio windows ``(B, T, W, F)`` → ``(B, audio_dim)``; the T windows are input channels."""

    def __init__(self, config: LipGANConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.context_frames
        for index, out in enumerate(config.audio_channels):
            layers.append(_conv(width, out, stride=1 if index == 0 else 2))
            width = out
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width, config.audio_dim), nn.SiLU())

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        features = self.convs(audio_features)
        return self.head(features.mean(dim=(2, 3)))


class LipGANGenerator(nn.Module):
    """``[masked target ; reference]`` + audio windows → the whole face crop (see the module docstring)."""

    KIND = KIND

    def __init__(self, config: LipGANConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.channels
        self.audio_encoder = AudioWindowEncoder(config)
        self.stem = _conv(6, channels[0])
        self.down = nn.ModuleList(
            _level(channels[i - 1], channels[i], 2, config.res_blocks) for i in range(1, len(channels))
        )
        bottom = channels[-1]
        self.audio_projection = nn.Linear(config.audio_dim, bottom)
        self.fuse = _level(2 * bottom, bottom, 1, config.res_blocks)
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), _conv(channels[i], channels[i - 1]))
            for i in range(len(channels) - 1, 0, -1)
        )
        self.merge = nn.ModuleList(
            _level(2 * channels[i - 1], channels[i - 1], 1, config.res_blocks if i > 1 else 0)
            for i in range(len(channels) - 1, 0, -1)
        )
        self.output = nn.Conv2d(channels[0], 3, 3, padding=1)

    def forward(
        self, masked_frames: torch.Tensor, reference_frames: torch.Tensor, audio_features: torch.Tensor
    ) -> torch.Tensor:
        """Generate face crops.

        Args:
            masked_frames: ``(B, 3, S, S)`` in [-1, 1], the target crop with its mouth region set to -1.
            reference_frames: ``(B, 3, S, S)`` in [-1, 1], another frame of the same face.
            audio_features: ``(B, T, W, F)`` feature windows of the T frames centred on the target.

        Returns:
            ``(B, 3, S, S)`` in [-1, 1] (tanh): the whole generated crop.
        """
        config = self.config
        size = config.image_size
        expected = (config.context_frames, config.window, config.feature_dim)
        if tuple(audio_features.shape[1:]) != expected:
            raise ValueError(f"audio_features must be (B, {expected}), got {tuple(audio_features.shape)}")
        if masked_frames.shape[-2:] != (size, size) or reference_frames.shape != masked_frames.shape:
            raise ValueError(
                f"masked and reference frames must both be (B, 3, {size}, {size}), got "
                f"{tuple(masked_frames.shape)} and {tuple(reference_frames.shape)}"
            )
        x = self.stem(torch.cat([masked_frames, reference_frames], dim=1))
        skips = [x]
        for level in self.down:
            x = level(x)
            skips.append(x)
        audio = self.audio_projection(self.audio_encoder(audio_features))
        x = self.fuse(torch.cat([x, audio[:, :, None, None].expand_as(x)], dim=1))
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return torch.tanh(self.output(x))

    def save_pretrained(self, directory: str | Path, extra: Mapping[str, object] | None = None) -> None:
        """Write ``weights.safetensors`` + ``config.json`` (kind ``LipGANGenerator``)."""
        save_pretrained(self, self.config, directory, kind=KIND, extra=extra)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> LipGANGenerator:
        """Load a folder written by :meth:`save_pretrained` (strict), in eval mode."""
        return load_pretrained(cls, LipGANConfig, directory, kind=KIND, device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# The expert's view of generated frames (Wav2Lip's sync loss is −log of this probability)


def expert_input(frames: torch.Tensor, config: SyncNetConfig) -> torch.Tensor:
    """Differentiable ``metrics.sync.prepare_frames``: crops ``(B, T, 3, S, S)`` in [-1, 1] → ``(B, 3, T, h, w)``.

    Resized to ``config.image_size`` (area averaging when shrinking, bilinear otherwise), the lower
    half kept for ``region == "lower_half"``, colours as ``config.color``.
    """
    batch, count = frames.shape[:2]
    flat = frames.flatten(0, 1).float()
    size = config.image_size
    if flat.shape[-1] != size:
        mode = "area" if flat.shape[-1] > size else "bilinear"
        flat = F.interpolate(flat, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    if config.region == "lower_half":
        flat = flat[..., size - size // 2 :, :]
    if config.color == "bgr255":
        flat = (flat.flip(1) + 1) * 127.5
    return flat.unflatten(0, (batch, count)).transpose(1, 2)


def sync_probability(expert: SyncNet, frames: torch.Tensor, mfcc_window: torch.Tensor) -> torch.Tensor:
    """The expert's "in sync" probability ``(cos + 1) / 2``, ``(B,)``.

    Args:
        expert: the frozen SyncNet.
        frames: ``(B, T, 3, S, S)`` crops in [-1, 1].
        mfcc_window: ``(B, 1, 13, 4T)`` MFCC windows starting at the first frame.
    """
    visual = F.normalize(expert.embed_frames(expert_input(frames, expert.config)).float(), dim=1)
    audio = F.normalize(expert.embed_audio(mfcc_window.float()).float(), dim=1)
    return ((visual * audio).sum(1) + 1).div(2).clamp(1e-6, 1 - 1e-6)
