"""Configs of the model components and the sampler (frozen: saved beside the weights)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from difftalk.config.fields import require as _require


@dataclass(frozen=True)
class AutoencoderConfig:
    """VQ-regularised image autoencoder (LDM ``vq-f4`` / ``vq-f8``, diffusers ``VQModel``)."""

    image_size: int = 256
    """Side of the square face crop in pixels."""
    block_out_channels: tuple[int, ...] = (128, 256, 512)
    """Channels per resolution level; ``len - 1`` stride-2 stages give the down factor f."""
    layers_per_block: int = 2
    """Residual blocks per encoder level (the decoder uses one more, as LDM does)."""
    attention_levels: tuple[bool, ...] = (False, False, False)
    """Self-attention inside each level (LDM ``attn_resolutions``); vq-f8 has it at the lowest level."""
    mid_attention: bool = True
    """Self-attention in the middle blocks of encoder and decoder (on in vq-f4 and vq-f8)."""
    latent_channels: int = 3
    """Channels of the latent (and of each codebook vector)."""
    num_embeddings: int = 8192
    """Codebook size."""
    quantize: bool = True
    """Quantise latents to the codebook before decoding (VQ, as LDM and the official code). False
    decodes the continuous latents and trains without the codebook loss (a plain autoencoder): on
    the synthetic benchmark a small VQ autoencoder used ~150 of its 1024 codes and recoloured unseen
    identities, see docs/results.md."""
    norm_num_groups: int = 32
    """GroupNorm groups; must divide every entry of ``block_out_channels``."""

    def __post_init__(self) -> None:
        _require(self.image_size >= 8, "image_size", f"must be >= 8, got {self.image_size}")
        _require(len(self.block_out_channels) >= 1, "block_out_channels", "needs at least one level")
        _require(
            len(self.attention_levels) == len(self.block_out_channels),
            "attention_levels",
            f"needs one entry per level ({len(self.block_out_channels)}), got {len(self.attention_levels)}",
        )
        for c in self.block_out_channels:
            _require(
                c % self.norm_num_groups == 0,
                "block_out_channels",
                f"{c} is not divisible by norm_num_groups={self.norm_num_groups}",
            )
        _require(
            self.image_size % self.down_factor == 0,
            "image_size",
            f"{self.image_size} is not divisible by the down factor {self.down_factor}",
        )
        _require(self.latent_channels >= 1, "latent_channels", "must be >= 1")
        _require(self.num_embeddings >= 2, "num_embeddings", "must be >= 2")
        _require(self.layers_per_block >= 1, "layers_per_block", "must be >= 1")

    @property
    def down_factor(self) -> int:
        """Spatial down-sampling factor f (4 for vq-f4, 8 for vq-f8)."""
        return int(2 ** (len(self.block_out_channels) - 1))

    @property
    def latent_size(self) -> int:
        """Side of the latent grid: ``image_size / f``."""
        return self.image_size // self.down_factor


TemporalFilter = Literal["self_attention", "conv_softmax", "none"]
FilterInit = Literal["uniform", "centre"]


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Per-frame audio window encoder followed by a temporal filter over neighbouring frames."""

    feature_dim: int = 80
    """Features per audio step: 80 for ``mel``, 384 for ``whisper``, 29 for DeepSpeech arrays."""
    window: int = 16
    """Audio feature steps per video frame window (centred on the frame)."""
    context_frames: int = 17
    """Neighbouring frame windows the filter sees, 2w+1 (paper: w=8 → 17; official code: 8)."""
    conv_channels: tuple[int, ...] = (32, 32, 64, 64)
    """Channels of the stride-2 Conv1d stack that reduces one window to a vector."""
    output_dim: int = 64
    """Size of the audio vector a (and of each audio token)."""
    temporal_filter: TemporalFilter = "self_attention"
    """``self_attention`` (paper), ``conv_softmax`` (official AD-NeRF AudioAttNet) or ``none``
    (centre frame only)."""
    attention_heads: int = 4
    """Heads of the self-attention temporal filter."""
    attention_layers: int = 1
    """Transformer layers of the self-attention temporal filter."""
    filter_init: FilterInit = "uniform"
    """Where the learnable frame weighting starts: ``uniform`` (paper/official: position terms at zero, so
    the filter starts as a ≈680 ms box average, and on the synthetic benchmark stays one — lip spread and
    rounding are averaged away) or ``centre`` (a logit bias starts at +``CENTRE_LOGIT`` on the target
    frame, ≈96% of the weight: the filter starts as the identity and learns how far to look)."""

    def __post_init__(self) -> None:
        _require(self.feature_dim >= 1, "feature_dim", "must be >= 1")
        _require(self.window >= 2, "window", f"must be >= 2, got {self.window}")
        _require(self.context_frames >= 1, "context_frames", f"must be >= 1, got {self.context_frames}")
        _require(len(self.conv_channels) >= 1, "conv_channels", "needs at least one layer")
        _require(
            self.output_dim % self.attention_heads == 0,
            "attention_heads",
            f"output_dim={self.output_dim} is not divisible by {self.attention_heads} heads",
        )
        if self.temporal_filter == "conv_softmax":
            _require(
                self.output_dim >= 2,
                "output_dim",
                "conv_softmax attends on the first half of the channels; needs output_dim >= 2",
            )
        if self.temporal_filter == "self_attention":
            _require(self.attention_layers >= 1, "attention_layers", "must be >= 1")


@dataclass(frozen=True)
class LandmarkEncoderConfig:
    """MLP over the mouth-free landmark subset, normalised to the crop."""

    num_points: int = 39
    """Landmarks fed to the encoder (official subset 0-3, 13-47 of the 68 iBUG points)."""
    hidden_dims: tuple[int, ...] = (128, 64)
    """Hidden layer sizes of the MLP (official: 78 → 128 → 64 → 64)."""
    output_dim: int = 64
    """Size of the landmark vector l."""

    def __post_init__(self) -> None:
        _require(self.num_points >= 1, "num_points", "must be >= 1")
        _require(self.output_dim >= 1, "output_dim", "must be >= 1")


@dataclass(frozen=True)
class UNetConfig:
    """Denoising UNet with cross-attention (diffusers ``UNet2DConditionModel``)."""

    block_out_channels: tuple[int, ...] = (256, 512, 768, 1024)
    """Channels per resolution level."""
    layers_per_block: int = 2
    """Residual blocks per level."""
    attention_levels: tuple[bool, ...] = (False, True, True, True)
    """Whether each level has (self + cross) attention; the middle block always has it."""
    head_dim: int = 32
    """Channels per attention head (LDM ``num_head_channels``)."""
    transformer_layers: int = 1
    """Transformer blocks per attention layer."""
    norm_num_groups: int = 32
    """GroupNorm groups; must divide every entry of ``block_out_channels``."""
    zero_init: bool = True
    """Zero-initialise residual out-convs, attention out-projections and the output conv, as LDM does."""

    def __post_init__(self) -> None:
        _require(len(self.block_out_channels) >= 1, "block_out_channels", "needs at least one level")
        _require(
            len(self.attention_levels) == len(self.block_out_channels),
            "attention_levels",
            f"needs one entry per level ({len(self.block_out_channels)}), got {len(self.attention_levels)}",
        )
        for c in self.block_out_channels:
            _require(
                c % self.norm_num_groups == 0,
                "block_out_channels",
                f"{c} is not divisible by norm_num_groups={self.norm_num_groups}",
            )
            _require(c % self.head_dim == 0, "head_dim", f"{c} channels are not divisible by {self.head_dim}")
        _require(self.layers_per_block >= 1, "layers_per_block", "must be >= 1")


BetaSchedule = Literal["scaled_linear", "linear", "cosine"]


@dataclass(frozen=True)
class DiffusionConfig:
    """Forward-process noise schedule used for training (and by the samplers)."""

    num_train_timesteps: int = 1000
    """Number of diffusion steps T."""
    beta_schedule: BetaSchedule = "scaled_linear"
    """``scaled_linear`` is LDM's "linear" (linear in sqrt(beta)); ``linear``; ``cosine``
    (Nichol & Dhariwal)."""
    beta_start: float = 0.0015
    """First beta (ignored by ``cosine``)."""
    beta_end: float = 0.0195
    """Last beta (ignored by ``cosine``)."""

    def __post_init__(self) -> None:
        _require(self.num_train_timesteps >= 2, "num_train_timesteps", "must be >= 2")
        _require(0.0 < self.beta_start < 1.0, "beta_start", f"must be in (0, 1), got {self.beta_start}")
        _require(0.0 < self.beta_end < 1.0, "beta_end", f"must be in (0, 1), got {self.beta_end}")
        _require(self.beta_start <= self.beta_end, "beta_start", "must not exceed beta_end")


ContextMode = Literal["single_token", "multi_token"]
MaskedTarget = Literal["pixel", "latent"]


@dataclass(frozen=True)
class ModelConfig:
    """The whole DiffTalk model: autoencoder, condition encoders, UNet and noise schedule."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    landmark_encoder: LandmarkEncoderConfig = field(default_factory=LandmarkEncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    context: ContextMode = "single_token"
    """``single_token``: one ``[a; l]`` token (official; cross-attention is then a learned bias).
    ``multi_token``: one token per audio frame window plus one landmark token."""
    context_dim: int = 128
    """Width of the cross-attention context tokens."""
    use_landmarks: bool = True
    """Condition on landmarks (ablation switch; off = zero landmark vector)."""
    use_reference: bool = True
    """Condition on the reference latent (ablation switch; off = zero channels)."""
    use_masked_target: bool = True
    """Condition on the masked-target latent (ablation switch; off = zero channels)."""
    masked_target: MaskedTarget = "pixel"
    """How z_masked is formed: ``pixel`` (paper/official) = E(target frame with the mouth region blacked
    out), whose latent differs from the target's well outside the mask (the encoder sees the black box);
    ``latent`` = E(target) · (1 − latent mouth mask): exact outside the mask, zero inside, one encoder pass
    fewer per frame. Training and inference use the same rule (``DiffTalkModel.masked_target_latents``)."""
    latent_scale: float = 1.0
    """LDM ``scale_factor``: the diffusion latent is ``latent_scale · E(x)`` so that it has about unit
    variance like the noise (official: 1.0 with the LDM VQ-f4). ``difftalk train`` sets it to 1/std of
    the training latents when ``train.scale_latents_by_std`` is on; checkpoints record the value."""
    unet_window: int | None = None
    """None (paper): the UNet runs on the whole latent map. m ≥ 0: it runs on the window around the mouth mask
    grown by m latent cells (the rest is known), in training and sampling alike — ≈ 30% less UNet time at
    m = 1 on aligned crops (``models.unet_window``)."""

    def __post_init__(self) -> None:
        _require(self.latent_scale > 0, "latent_scale", "must be > 0 (1.0 = latents as the encoder gives them)")
        _require(
            self.unet_window is None or self.unet_window >= 0,
            "unet_window",
            f"must be >= 0 latent cells or null (the whole map), got {self.unet_window}",
        )
        if self.context == "single_token":
            total = self.audio_encoder.output_dim + self.landmark_encoder.output_dim
            _require(
                total == self.context_dim,
                "context_dim",
                f"single_token context concatenates audio ({self.audio_encoder.output_dim}) and landmark "
                f"({self.landmark_encoder.output_dim}) vectors = {total}; set context_dim to {total}",
            )
        _require(self.context_dim >= 1, "context_dim", "must be >= 1")


@dataclass(frozen=True)
class SamplerConfig:
    """DDIM sampling at inference."""

    num_steps: int = 200
    """DDIM steps (paper: 200)."""
    eta: float = 0.0
    """DDIM eta: 0 is deterministic DDIM, 1 is DDPM-like."""
    blend_final: bool = True
    """After the last step, put the exact known latent back outside the mouth mask (the official code does
    not; on by default because the result is pasted into the original frame anyway)."""

    def __post_init__(self) -> None:
        _require(self.num_steps >= 1, "num_steps", f"must be >= 1, got {self.num_steps}")
        _require(self.eta >= 0.0, "eta", f"must be >= 0, got {self.eta}")
