"""The denoising UNet M: diffusers ``UNet2DConditionModel`` configured like DiffTalk's LDM UNet.

Stage ④. Input ``[z_t; z_masked; z_ref]`` (3 × latent channels), output the predicted noise
(latent channels), cross-attention on the ``[audio; landmarks]`` context tokens. The layout matches
the official openaimodel UNet one-to-one (see ``shared/reference/difftalk_official.md`` §6); diffusers
does not zero-initialise, so :func:`zero_init_like_ldm` does what LDM's ``zero_module`` does.
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from difftalk.config import UNetConfig


def build_unet(
    config: UNetConfig, latent_channels: int, sample_size: int, cross_attention_dim: int
) -> UNet2DConditionModel:
    """Build the UNet for ``sample_size``² latents with ``latent_channels`` channels.

    Args:
        config: the UNet config.
        latent_channels: channels C of one latent; the input has 3C (noisy, masked, reference).
        sample_size: side of the latent grid (64 for the paper settings).
        cross_attention_dim: width of the context tokens.
    """
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    # diffusers' `attention_head_dim` is really the number of heads per block (a known naming quirk).
    heads = tuple(c // config.head_dim for c in config.block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3 * latent_channels,
        out_channels=latent_channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads,
        transformer_layers_per_block=config.transformer_layers,
        norm_num_groups=config.norm_num_groups,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        act_fn="silu",
        use_linear_projection=False,
    )
    if config.zero_init:
        zero_init_like_ldm(unet)
    return unet


def zero_init_like_ldm(unet: UNet2DConditionModel) -> None:
    """Zero the residual out-convs, transformer ``proj_out`` and ``conv_out`` (LDM ``zero_module``)."""
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            nn.init.zeros_(module.conv2.weight)
            nn.init.zeros_(module.conv2.bias)
        elif isinstance(module, Transformer2DModel):
            nn.init.zeros_(module.proj_out.weight)
            nn.init.zeros_(module.proj_out.bias)
    nn.init.zeros_(unet.conv_out.weight)
    nn.init.zeros_(unet.conv_out.bias)
