"""Image autoencoder E_I / D_I: a VQ-regularised autoencoder (diffusers ``VQModel``).

Stage ④ of the data flow. Face crops (``(B, 3, H, W)`` float in [-1, 1]) are encoded to the
*pre-quantisation* latents the diffusion model works on (``(B, C, H/f, W/f)``, unscaled, as in
DiffTalk) and decoded after snapping to the codebook. f=4 (LDM ``vq-f4``) maps 256² to 64×64×3;
f=8 (``vq-f8``-style) maps 512² to the same 64×64 grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import VQModel
from torch import nn

from difftalk.checkpoint import load_pretrained, save_pretrained
from difftalk.config import AutoencoderConfig


@dataclass
class AutoencoderOutput:
    """Result of a full autoencoder pass (used to train it)."""

    reconstruction: torch.Tensor
    """``(B, 3, H, W)`` float, nominally in [-1, 1] (not clamped)."""
    codebook_loss: torch.Tensor
    """Scalar VQ codebook + commitment loss (taming/LDM ``legacy`` form, beta 0.25)."""


def build_vq_model(config: AutoencoderConfig) -> VQModel:
    """A diffusers ``VQModel`` laid out exactly like the LDM VQ autoencoder described by ``config``."""
    down = tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in config.attention_levels)
    up = tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(config.attention_levels))
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        vq_embed_dim=config.latent_channels,
        num_vq_embeddings=config.num_embeddings,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.image_size,
        mid_block_add_attention=config.mid_attention,
        scaling_factor=1.0,
    )


class Autoencoder(nn.Module):
    """The frozen first stage of DiffTalk (trainable on its own with ``difftalk train-autoencoder``)."""

    KIND = "Autoencoder"

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vq = build_vq_model(config)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode frames to pre-quantisation latents.

        Args:
            frames: ``(B, 3, S, S)`` float in [-1, 1], S = ``config.image_size``.

        Returns:
            ``(B, C, S/f, S/f)`` latents (no scaling factor applied, as in DiffTalk).
        """
        size = self.config.image_size
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[-2:] != (size, size):
            raise ValueError(
                f"Autoencoder.encode expects frames of shape (B, 3, {size}, {size}), "
                f"got {tuple(frames.shape)}; "
                f"resize the face crops to {size}x{size}"
            )
        return self.vq.encode(frames).latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantise latents to the codebook (unless ``config.quantize`` is off) and decode them.

        Args:
            latents: ``(B, C, s, s)`` pre-quantisation latents.

        Returns:
            ``(B, 3, s*f, s*f)`` frames, nominally in [-1, 1] (not clamped).
        """
        return self.vq.decode(latents, force_not_quantize=not self.config.quantize).sample

    def forward(self, frames: torch.Tensor) -> AutoencoderOutput:
        """Encode, quantise and decode ``frames`` (``(B, 3, S, S)`` in [-1, 1])."""
        latents = self.encode(frames)
        if not self.config.quantize:
            reconstruction = self.vq.decoder(self.vq.post_quant_conv(latents))
            # 0 · codebook keeps the unused codebook in the graph (DDP wants every parameter used)
            unused = self.vq.quantize.embedding.weight.sum() * 0
            return AutoencoderOutput(reconstruction=reconstruction, codebook_loss=unused)
        quantised, codebook_loss, _ = self.vq.quantize(latents)
        reconstruction = self.vq.decoder(self.vq.post_quant_conv(quantised))
        return AutoencoderOutput(reconstruction=reconstruction, codebook_loss=codebook_loss)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write ``weights.safetensors`` + ``config.json`` to ``directory``."""
        save_pretrained(self, self.config, directory, kind=self.KIND, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> Autoencoder:
        """Load a folder written by :meth:`save_pretrained` (strict)."""
        return load_pretrained(cls, AutoencoderConfig, directory, kind=cls.KIND, device=device, dtype=dtype)
