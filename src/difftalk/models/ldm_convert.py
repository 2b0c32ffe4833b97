"""Strict conversion of public LDM VQ checkpoints (``vq-f4``, ``vq-f8``) to our :class:`Autoencoder`.

Stage ④ (model weights). The CompVis latent-diffusion first-stage checkpoints (``vq-f4.zip`` →
``model.ckpt``, the weights DiffTalk uses) store a taming-style state dict: ``encoder.down.{i}.block.{j}``,
``encoder.mid.attn_1``, ``decoder.up.{i}`` (indexed from the *highest* resolution), attention
projections as 1×1 convolutions, ``quantize.embedding``. This module maps every key onto diffusers'
``VQModel`` names. Only the training-loss weights (``loss.*``: the PatchGAN discriminator and LPIPS)
are dropped on purpose; any other unmapped key, missing key or shape mismatch is an error.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from difftalk.checkpoint import CheckpointError, load_state_dict_strict
from difftalk.config import AutoencoderConfig
from difftalk.models.autoencoder import Autoencoder

logger = logging.getLogger(__name__)

DROPPED_PREFIXES = ("loss.",)
"""Keys of the LDM training checkpoint that inference does not need (discriminator, LPIPS)."""

_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}

#: Public LDM first-stage configs (``models/first_stage_models/vq-f{4,8}/config.yaml``).
LDM_VQ_F4 = AutoencoderConfig(
    image_size=256,
    block_out_channels=(128, 256, 512),
    layers_per_block=2,
    attention_levels=(False, False, False),
    latent_channels=3,
    num_embeddings=8192,
)
LDM_VQ_F8 = AutoencoderConfig(
    image_size=256,
    block_out_channels=(128, 256, 256, 512),
    layers_per_block=2,
    attention_levels=(False, False, False, True),
    latent_channels=4,
    num_embeddings=16384,
)


def autoencoder_config_from_ldm(ldm_config: Mapping[str, Any], norm_num_groups: int = 32) -> AutoencoderConfig:
    """Translate an LDM first-stage YAML (``model.params`` with ``ddconfig``) to :class:`AutoencoderConfig`.

    ``norm_num_groups`` is not in the YAML (LDM hard-codes 32); it is a parameter for small test models.
    """
    params = ldm_config.get("model", {}).get("params", ldm_config)
    dd = params["ddconfig"]
    if dd.get("double_z", False):
        raise CheckpointError("ddconfig.double_z is true: that is a KL autoencoder, not a VQ one")
    if dd["z_channels"] != params["embed_dim"]:
        raise CheckpointError(f"z_channels ({dd['z_channels']}) != embed_dim ({params['embed_dim']}) is not supported")
    channels = tuple(int(dd["ch"]) * int(m) for m in dd["ch_mult"])
    resolution = int(dd["resolution"])
    attention = tuple((resolution // 2**i) in set(dd.get("attn_resolutions", [])) for i in range(len(channels)))
    return AutoencoderConfig(
        image_size=resolution,
        block_out_channels=channels,
        layers_per_block=int(dd["num_res_blocks"]),
        attention_levels=attention,
        mid_attention=dd.get("attn_type", "vanilla") != "none",
        latent_channels=int(params["embed_dim"]),
        num_embeddings=int(params["n_embed"]),
        norm_num_groups=norm_num_groups,
    )


def _map_key(key: str, num_levels: int) -> str | None:
    """diffusers name for one LDM key, or None if it is not a known LDM VQ key."""
    if key in (
        "quantize.embedding.weight",
        "quant_conv.weight",
        "quant_conv.bias",
        "post_quant_conv.weight",
        "post_quant_conv.bias",
    ):
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)", key)
    if m:
        part, layer, param = m.groups()
        return f"{part}.{'conv_norm_out' if layer == 'norm_out' else layer}.{param}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(\w+)\.(weight|bias)", key)
    if m:
        part, block, layer, param = m.groups()
        if block == "attn_1":
            return f"{part}.mid_block.attentions.0.{_ATTN[layer]}.{param}" if layer in _ATTN else None
        index = 0 if block == "block_1" else 1
        return f"{part}.mid_block.resnets.{index}.{_RESNET[layer]}.{param}" if layer in _RESNET else None
    m = re.fullmatch(r"encoder\.down\.(\d+)\.(block|attn)\.(\d+)\.(\w+)\.(weight|bias)", key)
    if m:
        level, kind, j, layer, param = m.groups()
        table = _RESNET if kind == "block" else _ATTN
        name = "resnets" if kind == "block" else "attentions"
        return f"encoder.down_blocks.{level}.{name}.{j}.{table[layer]}.{param}" if layer in table else None
    m = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key)
    if m:
        return f"encoder.down_blocks.{m.group(1)}.downsamplers.0.conv.{m.group(2)}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.(block|attn)\.(\d+)\.(\w+)\.(weight|bias)", key)
    if m:
        level, kind, j, layer, param = m.groups()
        up = num_levels - 1 - int(level)
        table = _RESNET if kind == "block" else _ATTN
        name = "resnets" if kind == "block" else "attentions"
        return f"decoder.up_blocks.{up}.{name}.{j}.{table[layer]}.{param}" if layer in table else None
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key)
    if m:
        return f"decoder.up_blocks.{num_levels - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"
    return None


def convert_ldm_vq_state_dict(
    ldm_state: Mapping[str, torch.Tensor], config: AutoencoderConfig
) -> dict[str, torch.Tensor]:
    """Rename an LDM VQ state dict to the keys of ``Autoencoder(config)`` (prefix ``vq.``).

    Args:
        ldm_state: the ``state_dict`` of an LDM ``VQModel`` / ``VQModelInterface`` checkpoint (a leading
            ``first_stage_model.`` prefix, as in a full LDM checkpoint, is accepted).
        config: the autoencoder config the weights belong to.

    Raises:
        CheckpointError: a key is neither mappable nor in :data:`DROPPED_PREFIXES`.
    """
    num_levels = len(config.block_out_channels)
    if any(k.startswith("first_stage_model.") for k in ldm_state):
        ldm_state = {
            k[len("first_stage_model.") :]: v for k, v in ldm_state.items() if k.startswith("first_stage_model.")
        }
    converted: dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, tensor in ldm_state.items():
        if key.startswith(DROPPED_PREFIXES):
            dropped.append(key)
            continue
        new_key = _map_key(key, num_levels)
        if new_key is None:
            unknown.append(key)
            continue
        if ".attentions." in new_key and new_key.endswith(".weight") and tensor.ndim == 4:
            # LDM attention projections are 1x1 convolutions; diffusers uses Linear layers.
            tensor = tensor[:, :, 0, 0]
        converted["vq." + new_key] = tensor
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} key(s) of the LDM checkpoint are not part of an LDM VQ autoencoder "
            f"(e.g. {unknown[:5]}); is this a vq-f4/vq-f8 first-stage checkpoint?"
        )
    if dropped:
        logger.info("dropped %d training-only keys (%s)", len(dropped), ", ".join(DROPPED_PREFIXES))
    return converted


def read_ldm_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the state dict of an LDM ``.ckpt`` (weights-only unpickling) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LDM checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{path} could not be read with the safe weights-only loader ({type(exc).__name__}: {exc}). "
            "Re-save just its state_dict (torch.save(ckpt['state_dict'], 'sd.pt')) in a trusted "
            "environment, or convert it to .safetensors, and pass that file"
        ) from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return state


def load_ldm_autoencoder(path: str | Path, config: AutoencoderConfig = LDM_VQ_F4) -> Autoencoder:
    """Build an :class:`Autoencoder` from a public LDM VQ checkpoint, strictly."""
    model = Autoencoder(config)
    converted = convert_ldm_vq_state_dict(read_ldm_checkpoint(path), config)
    load_state_dict_strict(model, converted, str(path))
    return model.eval()
