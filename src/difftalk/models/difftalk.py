"""DiffTalkModel: the frozen autoencoder, the condition encoders and the denoising UNet.

Stage ④. Conditions travel by name in :class:`DiffTalkConditions`. The UNet input is
``[z_t; z_masked; z_ref]`` (DiffTalk §3.2) and its cross-attention context is built from the audio
vector a and the landmark vector l: one ``[a; l]`` token (official) or one token per audio frame
window plus a landmark token (``multi_token``). Training minimises the ε-prediction MSE (paper Eq. 3)
with the autoencoder frozen. ``make_denoiser`` encodes the context once and returns the closure that
the samplers in ``diffusion/`` call at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difftalk.checkpoint import load_pretrained, save_pretrained
from difftalk.config import ModelConfig
from difftalk.diffusion.ddim import DenoiseFn, randn
from difftalk.diffusion.schedule import add_noise, make_alphas_cumprod
from difftalk.diffusion.schedule import predict_clean as predict_clean_latents
from difftalk.models.audio_encoder import AudioEncoder
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.landmark_encoder import LandmarkEncoder
from difftalk.models.unet import build_unet
from difftalk.models.unet_window import Prediction, known_prediction, mouth_window
from difftalk.models.window_decode import Window, decode_recording_norms, decode_window


@dataclass
class DiffTalkConditions:
    """Everything the denoiser is conditioned on, by name. Shapes for batch B, latent C×h×w."""

    audio_features: torch.Tensor
    """``(B, T, S, F)`` feature windows of the 2w+1 frames around the target frame."""
    landmarks: torch.Tensor
    """``(B, P, 2)`` mouth-free landmarks of the target frame, in [-1, 1] crop coordinates."""
    reference_latents: torch.Tensor
    """``(B, C, h, w)`` latents of the reference face (same identity)."""
    masked_latents: torch.Tensor
    """``(B, C, h, w)`` latents of the target frame with its mouth region masked."""


@dataclass(frozen=True)
class LossWeighting:
    """How the ε-MSE is weighted (``TrainConfig`` fields of the same names; the defaults are the paper's)."""

    min_snr_gamma: float = 0.0
    """> 0: weight each sample by min(SNR(t), γ) / SNR(t) (Min-SNR-γ); 0: uniform over t."""
    mask_loss_outside: float = 1.0
    """Weight of latent cells outside the dilated mouth mask (1 inside); 1 = uniform."""
    mask_loss_dilate: int = 1
    """Latent cells by which the mouth mask is grown before weighting."""


@dataclass
class TrainingLossOutput:
    """Result of :meth:`DiffTalkModel.training_loss`."""

    loss: torch.Tensor
    """Scalar weighted ε-MSE (plain mean over all latent elements with the default weighting)."""
    timesteps: torch.Tensor
    """``(B,)`` the sampled diffusion steps."""
    mse_inside: torch.Tensor | None = None
    """``(B,)`` detached unweighted ε-MSE inside the (undilated) latent mouth mask, when a mask was given."""
    mse_outside: torch.Tensor | None = None
    """``(B,)`` the same outside the mask."""
    predicted_clean: torch.Tensor | None = None
    """``(B, C, h, w)`` the one-step x̂₀ = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t, with its graph (``predict_clean=True``)."""


def dilate_mask(mask: torch.Tensor, cells: int) -> torch.Tensor:
    """Grow a ``(B, 1, h, w)`` {0, 1} mask by ``cells`` in every direction (square structuring element)."""
    if cells <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * cells + 1, stride=1, padding=cells)


class DiffTalkModel(nn.Module):
    """Conditional latent diffusion model for talking heads."""

    KIND = "DiffTalkModel"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ae = config.autoencoder
        self.autoencoder = Autoencoder(ae)
        self.autoencoder.requires_grad_(False)
        self.audio_encoder = AudioEncoder(config.audio_encoder)
        self.landmark_encoder = LandmarkEncoder(config.landmark_encoder)
        self.context_audio: nn.Module | None = None
        self.context_landmarks: nn.Module | None = None
        self.context_types: nn.Parameter | None = None
        if config.context == "multi_token":
            self.context_audio = nn.Linear(config.audio_encoder.output_dim, config.context_dim)
            self.context_landmarks = nn.Linear(config.landmark_encoder.output_dim, config.context_dim)
            self.context_types = nn.Parameter(torch.zeros(2, config.context_dim))
        self.unet = build_unet(config.unet, ae.latent_channels, ae.latent_size, config.context_dim)
        d = config.diffusion
        # A plain float64 CPU tensor, not a buffer: `.to(bfloat16)` must never round ᾱ (ᾱ_1 ≈ 0.9985).
        self.alphas_cumprod = make_alphas_cumprod(d.beta_schedule, d.num_train_timesteps, d.beta_start, d.beta_end)

    # ---------------------------------------------------------------------------------------------
    # The frozen autoencoder
    # ---------------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DiffTalkModel:
        """Set training mode; the frozen autoencoder always stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frozen encoder: ``(B, 3, S, S)`` in [-1, 1] → diffusion latents ``(B, C, h, w)``.

        The pre-quantisation latents times ``config.latent_scale`` (see :meth:`scale_latents`).
        """
        return self.scale_latents(self.autoencoder.encode(frames))

    def scale_latents(self, raw: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents (as the autoencoder or the latent cache gives them) → diffusion latents."""
        scale = self.config.latent_scale
        return raw if scale == 1.0 else raw * scale

    def decode_latents(self, latents: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """Frozen decoder: diffusion latents ``(B, C, h, w)`` → frames ``(B, 3, S, S)`` clamped to [-1, 1].

        ``differentiable``: keep the graph back to ``latents`` (a loss on decoded pixels; the decoder's own
        weights stay frozen); otherwise decoded without autograd.
        """
        scale = self.config.latent_scale
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return self.autoencoder.decode(latents if scale == 1.0 else latents / scale).clamp(-1, 1)

    @torch.no_grad()
    def decode_latents_recording_norms(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode_latents` that also returns the decoder's normalisation statistics ``(B, K, 2)`` for
        :meth:`decode_latents_window` (``models.window_decode``)."""
        scale = self.config.latent_scale
        frames, stats = decode_recording_norms(self.autoencoder, latents if scale == 1.0 else latents / scale)
        return frames.clamp(-1, 1), stats

    @torch.no_grad()
    def decode_latents_window(
        self, latents: torch.Tensor, norm_stats: torch.Tensor, window: Window, margin: int
    ) -> torch.Tensor:
        """The pixels of a latent ``window`` ``(row0, row1, col0, col1)`` of diffusion latents ``(B, C, h, w)``,
        normalised with a full decode's ``norm_stats`` (``models.window_decode``), clamped to [-1, 1]."""
        scale = self.config.latent_scale
        raw = latents if scale == 1.0 else latents / scale
        return decode_window(self.autoencoder, raw, norm_stats, window, margin).clamp(-1, 1)

    def prepare_conditions(
        self,
        *,
        audio_features: torch.Tensor,
        landmarks: torch.Tensor,
        reference_frames: torch.Tensor,
        masked_frames: torch.Tensor,
    ) -> DiffTalkConditions:
        """Encode the image conditions with the frozen autoencoder.

        Args:
            audio_features: ``(B, T, S, F)``.
            landmarks: ``(B, P, 2)`` in [-1, 1].
            reference_frames: ``(B, 3, S, S)`` in [-1, 1].
            masked_frames: ``(B, 3, S, S)`` in [-1, 1], the target with its mouth region masked.
        """
        return DiffTalkConditions(
            audio_features=audio_features,
            landmarks=landmarks,
            reference_latents=self.encode_frames(reference_frames),
            masked_latents=self.encode_frames(masked_frames),
        )

    # ---------------------------------------------------------------------------------------------
    # Conditioning and denoising
    # ---------------------------------------------------------------------------------------------

    def encode_context(
        self, audio_features: torch.Tensor, landmarks: torch.Tensor, drop_audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-attention context ``(B, N, context_dim)``: N = 1 (single token) or T + 1 (multi token).

        ``drop_audio``: optional ``(B,)`` bool; where True the sample gets the null audio — the audio
        encoder's output (vector and tokens) zeroed, the rest of the context unchanged — as seen in training
        with ``train.audio_dropout`` and used by audio guidance.
        """
        audio = self.audio_encoder(audio_features)
        audio_vector, audio_frames = audio.vector, audio.tokens
        if drop_audio is not None:
            keep = (~drop_audio.to(device=audio_vector.device, dtype=torch.bool)).to(audio_vector.dtype)
            audio_vector = audio_vector * keep[:, None]  # (a product keeps E_A in the graph for DDP)
            audio_frames = audio_frames * keep[:, None, None]
        landmark_vector = self.landmark_encoder(landmarks)
        if not self.config.use_landmarks:
            landmark_vector = landmark_vector * 0  # keeps E_L in the graph (DDP needs every parameter used)
        if self.config.context == "single_token":
            return torch.cat([audio_vector, landmark_vector], dim=-1).unsqueeze(1)
        assert self.context_audio is not None and self.context_landmarks is not None
        assert self.context_types is not None
        audio_tokens = self.context_audio(audio_frames) + self.context_types[0]
        landmark_token = self.context_landmarks(landmark_vector).unsqueeze(1) + self.context_types[1]
        return torch.cat([audio_tokens, landmark_token], dim=1)

    def unet_input(self, latents: torch.Tensor, conditions: DiffTalkConditions) -> torch.Tensor:
        """``[z_t; z_masked; z_ref]`` ``(B, 3C, h, w)``, with ablated conditions zeroed."""
        masked = conditions.masked_latents
        reference = conditions.reference_latents
        if not self.config.use_masked_target:
            masked = torch.zeros_like(masked)
        if not self.config.use_reference:
            reference = torch.zeros_like(reference)
        if masked.shape != latents.shape or reference.shape != latents.shape:
            raise ValueError(
                f"latent shapes differ: noisy {tuple(latents.shape)}, masked {tuple(masked.shape)}, "
                f"reference {tuple(reference.shape)}"
            )
        return torch.cat([latents, masked, reference], dim=1)

    def unet_window(self, mouth_mask: torch.Tensor | None) -> Window | None:
        """The latent window the UNet runs on for a batch with latent ``mouth_mask`` ``(B, 1, h, w)``
        (``config.unet_window``, ``models.unet_window``); None = the whole map (no window configured or no mask)."""
        margin = self.config.unet_window
        if margin is None or mouth_mask is None:
            return None
        return mouth_window(mouth_mask, margin, 2 ** (len(self.config.unet.block_out_channels) - 1))

    def predict_noise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        conditions: DiffTalkConditions,
        context: torch.Tensor | None = None,
        mouth_mask: torch.Tensor | None = None,
        prediction: Prediction = "epsilon",
        window: Window | None = None,
    ) -> torch.Tensor:
        """ε̂(z_t, t, conditions): ``(B, C, h, w)``; pass a precomputed ``context`` to skip its encoding.

        With ``config.unet_window`` and the latent ``mouth_mask`` ``(B, 1, h, w)`` the UNet runs on the mouth
        window only (:meth:`unet_window`) and the rest of the output is what ``conditions.masked_latents``
        imply for a network that predicts ``prediction`` (``models.unet_window.known_prediction``); a ``window``
        computed once by :meth:`unet_window` for the same mask may be passed instead of recomputing it.
        """
        if context is None:
            context = self.encode_context(conditions.audio_features, conditions.landmarks)
        sample = self.unet_input(latents, conditions)
        window = window if window is not None else self.unet_window(mouth_mask)
        if window is None:
            return self.unet(sample, timesteps, encoder_hidden_states=context.to(sample.dtype)).sample
        row0, row1, col0, col1 = window
        steps = timesteps.expand(latents.shape[0]) if timesteps.dim() == 0 else timesteps
        inside = self.unet(
            sample[:, :, row0:row1, col0:col1], steps, encoder_hidden_states=context.to(sample.dtype)
        ).sample
        output = known_prediction(latents, steps, conditions.masked_latents, self.alphas_cumprod, prediction)
        output = output.to(inside.dtype).clone()
        output[:, :, row0:row1, col0:col1] = inside
        return output

    def masked_target_latents(
        self, target_latents: torch.Tensor, latent_mouth_mask: torch.Tensor, masked_frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z_masked by ``config.masked_target`` — the one rule for training and inference.

        Args:
            target_latents: ``(B, C, h, w)`` diffusion latents of the target frame.
            latent_mouth_mask: ``(B, 1, h, w)`` 1 = mouth region (``data.masks.latent_mask``).
            masked_frames: ``(B, 3, S, S)`` the target with its mouth blacked out; needed for ``pixel`` only.
        """
        if self.config.masked_target == "latent":
            return target_latents * (1 - latent_mouth_mask.to(target_latents.dtype))
        if masked_frames is None:
            raise ValueError("model.masked_target='pixel' encodes the masked frame: pass masked_frames")
        return self.encode_frames(masked_frames)

    def make_denoiser(
        self,
        conditions: DiffTalkConditions,
        audio_guidance: float = 1.0,
        mouth_mask: torch.Tensor | None = None,
        prediction: Prediction = "epsilon",
    ) -> DenoiseFn:
        """The closure ``denoise(latents, timesteps) -> ε̂`` with the context encoded once.

        ``mouth_mask`` ``(B, 1, h, w)`` and ``prediction``: see :meth:`predict_noise` (a model with
        ``config.unet_window`` runs on the mouth window only when it is given).

        ``audio_guidance`` s ≠ 1: classifier-free guidance on the audio, ε̂ = ε̂_∅ + s (ε̂_a − ε̂_∅), where ε̂_∅
        sees the null audio (see :meth:`encode_context`) and everything else unchanged; both run as one
        batch of 2B (twice the UNet work). Only meaningful for a model trained with ``train.audio_dropout``.
        """
        context = self.encode_context(conditions.audio_features, conditions.landmarks)
        window = self.unet_window(mouth_mask)  # once: the mask is the same at every step
        if audio_guidance == 1.0:

            def denoise(latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
                return self.predict_noise(latents, timesteps, conditions, context, mouth_mask, prediction, window)

            return denoise

        batch = context.shape[0]
        null = self.encode_context(
            conditions.audio_features,
            conditions.landmarks,
            drop_audio=torch.ones(batch, dtype=torch.bool, device=context.device),
        )
        both_context = torch.cat([context, null])
        both = DiffTalkConditions(
            audio_features=conditions.audio_features,  # (unused: the context is given)
            landmarks=conditions.landmarks,
            reference_latents=torch.cat([conditions.reference_latents] * 2),
            masked_latents=torch.cat([conditions.masked_latents] * 2),
        )
        both_mask = None if mouth_mask is None else torch.cat([mouth_mask.expand(batch, -1, -1, -1)] * 2)

        def guided(latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            steps = timesteps.expand(latents.shape[0]) if timesteps.dim() == 0 else timesteps
            noise = self.predict_noise(
                torch.cat([latents] * 2), torch.cat([steps] * 2), both, both_context, both_mask, prediction, window
            )
            with_audio, without = noise.chunk(2)
            return without + audio_guidance * (with_audio - without)

        return guided

    def training_loss(
        self,
        *,
        conditions: DiffTalkConditions,
        target_frames: torch.Tensor | None = None,
        target_latents: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
        latent_mouth_mask: torch.Tensor | None = None,
        weighting: LossWeighting | None = None,
        predict_clean: bool = False,
        audio_dropout: float = 0.0,
    ) -> TrainingLossOutput:
        """ε-prediction MSE (paper Eq. 3) for one batch, optionally weighted over t and space.

        Args:
            conditions: from :meth:`prepare_conditions` (or built from cached latents).
            target_frames: ``(B, 3, S, S)`` in [-1, 1], the ground-truth frames, or ...
            target_latents: ... their diffusion latents ``(B, C, h, w)`` (scaled: cached pre-quantisation
                latents go through :meth:`scale_latents` first).
            generator: source of t ~ U{0..T-1} and of ε.
            timesteps: optional fixed ``(B,)`` t instead of sampling them.
            latent_mouth_mask: ``(B, 1, h, w)`` 1 = mouth region; needed for a mask weighting, for the
                inside/outside losses in the output and by a model with ``config.unet_window`` (whose UNet
                then runs on the mouth window; outside it the predicted noise is exact).
            weighting: see :class:`LossWeighting`; None = the paper's uniform ε-MSE.
            predict_clean: also return x̂₀ (for a loss on the predicted clean latents, e.g. the sync loss).
            audio_dropout: probability that a sample sees the null audio (drawn with ``generator``; 0 = never).
        """
        if (target_frames is None) == (target_latents is None):
            raise ValueError("pass exactly one of target_frames and target_latents")
        clean = self.encode_frames(target_frames) if target_frames is not None else target_latents
        assert clean is not None
        batch = clean.shape[0]
        if timesteps is None:
            gen_device = generator.device if generator is not None else clean.device
            timesteps = torch.randint(
                0, self.config.diffusion.num_train_timesteps, (batch,), generator=generator, device=gen_device
            )
        timesteps = timesteps.to(clean.device)
        noise = randn(tuple(clean.shape), generator, clean.device, clean.dtype)
        noisy = add_noise(clean, noise, timesteps, self.alphas_cumprod)
        context = None
        if audio_dropout > 0:
            gen_device = generator.device if generator is not None else clean.device
            drop = torch.rand(batch, generator=generator, device=gen_device) < audio_dropout
            context = self.encode_context(conditions.audio_features, conditions.landmarks, drop_audio=drop)
        if self.config.unet_window is not None and latent_mouth_mask is None:
            raise ValueError("model.unet_window: the UNet runs on the mouth window, so pass latent_mouth_mask")
        noise_pred = self.predict_noise(noisy, timesteps, conditions, context, latent_mouth_mask)
        error = (noise_pred.float() - noise.float()).square()  # (B, C, h, w)
        weighting = weighting or LossWeighting()
        spatial = torch.ones_like(error[:, :1])
        inside = outside = None
        if latent_mouth_mask is not None:
            mask = latent_mouth_mask.to(error.dtype)
            with torch.no_grad():
                cells = error.mean(dim=1, keepdim=True)
                inside = (cells * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1)
                outside = (cells * (1 - mask)).sum(dim=(1, 2, 3)) / (1 - mask).sum(dim=(1, 2, 3)).clamp_min(1)
            if weighting.mask_loss_outside != 1.0:
                grown = dilate_mask(mask, weighting.mask_loss_dilate)
                spatial = grown + weighting.mask_loss_outside * (1 - grown)
        elif weighting.mask_loss_outside != 1.0:
            raise ValueError("a mask-weighted loss (mask_loss_outside != 1) needs latent_mouth_mask")
        per_sample = (error * spatial).sum(dim=(1, 2, 3)) / (spatial.sum(dim=(1, 2, 3)) * error.shape[1])
        if weighting.min_snr_gamma > 0:
            alpha = self.alphas_cumprod.to(per_sample.device)[timesteps].to(per_sample.dtype)
            snr = alpha / (1 - alpha)
            per_sample = per_sample * snr.clamp(max=weighting.min_snr_gamma) / snr
        clean_pred = (
            predict_clean_latents(noisy, noise_pred.to(noisy.dtype), timesteps, self.alphas_cumprod)
            if predict_clean
            else None
        )
        return TrainingLossOutput(
            loss=per_sample.mean(),
            timesteps=timesteps,
            mse_inside=inside,
            mse_outside=outside,
            predicted_clean=clean_pred,
        )

    # ---------------------------------------------------------------------------------------------
    # Checkpoints
    # ---------------------------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters trained jointly (E_A, E_L, UNet, context projections); the autoencoder is frozen."""
        return [p for name, p in self.named_parameters() if not name.startswith("autoencoder.")]

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None, **extra: object) -> None:
        """Write ``weights.safetensors`` + ``config.json`` (optionally in ``dtype``, e.g. fp16)."""
        save_pretrained(self, self.config, directory, kind=self.KIND, dtype=dtype, extra=extra or None)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> DiffTalkModel:
        """Load a folder written by :meth:`save_pretrained` (strict; clear error for a non-checkpoint)."""
        return load_pretrained(cls, ModelConfig, directory, kind=cls.KIND, device=device, dtype=dtype)
