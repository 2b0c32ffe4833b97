"""Audio encoder E_A: per-frame window encoder + temporal filter over neighbouring frames.

Stage ④. For every video frame the data stage provides the feature windows of its 2w+1
neighbouring frames, ``audio_features`` of shape ``(B, T, S, F)`` (T = 2w+1 frames, S = 16
feature steps per window, F features per step: 80 mel bands, 384 Whisper channels or 29 DeepSpeech
logits). A small stride-2 Conv1d net (AD-NeRF ``AudioNet`` layout) maps each window to a vector;
a temporal filter then smooths over the T frames:

* ``self_attention`` (paper §3.2): a Transformer encoder over the T vectors with learned positions,
  then a learned, content-dependent softmax weighting over frames.
* ``conv_softmax`` (official code, AD-NeRF ``AudioAttNet``): a Conv1d chain on the first half of the
  channels predicts one softmax weight per frame.
* ``none``: the centre frame's vector only (the "without smoothing" ablation).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from difftalk.config import AudioEncoderConfig

_LEAK = 0.02

CENTRE_LOGIT = 6.0
"""``filter_init: centre``: the target frame's starting logit; with 17 frames it gets e⁶ / (e⁶ + 16) ≈ 96%."""


def _centre_logits(frames: int) -> torch.Tensor:
    """``(frames,)``: ``CENTRE_LOGIT`` on the centre frame, 0 elsewhere."""
    logits = torch.zeros(frames)
    logits[frames // 2] = CENTRE_LOGIT
    return logits


@dataclass
class AudioEncoding:
    """Output of :class:`AudioEncoder`."""

    vector: torch.Tensor
    """``(B, D)`` smoothed audio vector a for the centre frame."""
    tokens: torch.Tensor
    """``(B, T, D)`` per-frame audio tokens after the temporal filter (for a multi-token context)."""
    weights: torch.Tensor
    """``(B, T)`` the filter's weights over the frames (one-hot on the centre without a filter)."""


class WindowEncoder(nn.Module):
    """One audio feature window ``(N, S, F)`` → one vector ``(N, D)`` (AD-NeRF ``AudioNet`` layout)."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = config.feature_dim
        for out_channels in config.conv_channels:
            layers += [
                nn.Conv1d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
                nn.LeakyReLU(_LEAK),
            ]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(in_channels, config.output_dim),
            nn.LeakyReLU(_LEAK),
            nn.Linear(config.output_dim, config.output_dim),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """``(N, S, F)`` → ``(N, D)``; remaining time steps after the convs are averaged."""
        hidden = self.convs(windows.transpose(1, 2))
        return self.head(hidden.mean(dim=-1))


class SelfAttentionFilter(nn.Module):
    """Learnable temporal filter with self-attention over T frame vectors (the paper's smoothing)."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        d = config.output_dim
        self.positions = nn.Parameter(torch.zeros(1, config.context_frames, d))
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.attention_heads,
            dim_feedforward=2 * d,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.attention_layers, enable_nested_tensor=False)
        self.score = nn.Linear(d, 1)
        # a learnable per-frame logit bias, only for filter_init="centre" (the paper's filter has none)
        self.frame_bias: nn.Parameter | None = None
        if config.filter_init == "centre":
            self.frame_bias = nn.Parameter(_centre_logits(config.context_frames))

    def frame_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` filtered tokens → ``(B, T)`` softmax weights over the frames."""
        logits = self.score(tokens).squeeze(-1)
        if self.frame_bias is not None:
            logits = logits + self.frame_bias
        return torch.softmax(logits, dim=1)

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, T, D)`` → (smoothed ``(B, D)``, tokens ``(B, T, D)``, frame weights ``(B, T)``)."""
        tokens = self.encoder(vectors + self.positions)
        weights = self.frame_weights(tokens)
        return torch.einsum("bt,btd->bd", weights, tokens), tokens, weights


class ConvSoftmaxFilter(nn.Module):
    """The official AD-NeRF ``AudioAttNet``: conv chain → one softmax weight per frame."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.attend_channels = config.output_dim // 2
        channels = [self.attend_channels]
        while channels[-1] > 1:
            channels.append(max(1, channels[-1] // 2))
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):
            layers += [nn.Conv1d(c_in, c_out, kernel_size=3, padding=1), nn.LeakyReLU(_LEAK)]
        self.convs = nn.Sequential(*layers)
        self.mix = nn.Linear(config.context_frames, config.context_frames)
        if config.filter_init == "centre":
            with torch.no_grad():
                self.mix.bias.copy_(_centre_logits(config.context_frames))

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, T, D)`` → (smoothed ``(B, D)``, tokens ``(B, T, D)`` unchanged, frame weights ``(B, T)``)."""
        attention = self.convs(vectors[..., : self.attend_channels].transpose(1, 2)).squeeze(1)
        weights = torch.softmax(self.mix(attention), dim=1)
        return torch.einsum("bt,btd->bd", weights, vectors), vectors, weights


class AudioEncoder(nn.Module):
    """E_A: ``audio_features (B, T, S, F)`` → :class:`AudioEncoding` (a ∈ R^D and per-frame tokens)."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.window_encoder = WindowEncoder(config)
        self.temporal_filter: nn.Module | None
        if config.temporal_filter == "self_attention":
            self.temporal_filter = SelfAttentionFilter(config)
        elif config.temporal_filter == "conv_softmax":
            self.temporal_filter = ConvSoftmaxFilter(config)
        elif config.temporal_filter == "none":
            self.temporal_filter = None
        else:
            raise ValueError(f"unknown temporal_filter {config.temporal_filter!r}")

    def forward(self, audio_features: torch.Tensor) -> AudioEncoding:
        """Encode the feature windows of the 2w+1 frames around each target frame.

        Args:
            audio_features: ``(B, T, S, F)`` float, T = ``context_frames``, S = ``window``,
                F = ``feature_dim``; the centre index T // 2 is the target frame.
        """
        c = self.config
        expected = (c.context_frames, c.window, c.feature_dim)
        if audio_features.ndim != 4 or tuple(audio_features.shape[1:]) != expected:
            raise ValueError(
                f"audio_features must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"(frames, steps, features), got {tuple(audio_features.shape)}; check that the data's "
                "audio feature backend matches model.audio_encoder.feature_dim"
            )
        batch, frames = audio_features.shape[:2]
        vectors = self.window_encoder(audio_features.flatten(0, 1)).view(batch, frames, -1)
        if self.temporal_filter is None:
            centre = vectors[:, frames // 2]
            weights = torch.zeros(batch, frames, device=vectors.device, dtype=vectors.dtype)
            weights[:, frames // 2] = 1
            return AudioEncoding(vector=centre, tokens=vectors, weights=weights)
        vector, tokens, weights = self.temporal_filter(vectors)
        return AudioEncoding(vector=vector, tokens=tokens, weights=weights)
