"""The strict LDM vq-f4 / vq-f8 converter, on random state dicts in the LDM format built here.

`ldm_vq_state_dict` re-states the parameter layout of taming/LDM ``Encoder``, ``Decoder``,
``VectorQuantizer2`` and the training loss (``ldm/modules/diffusionmodules/model.py``) so the test
does not depend on the converter's own key table.
"""

from __future__ import annotations

import pytest
import torch

from difftalk.checkpoint import CheckpointError
from difftalk.config import AutoencoderConfig
from difftalk.models.ldm_convert import (
    LDM_VQ_F4,
    LDM_VQ_F8,
    autoencoder_config_from_ldm,
    convert_ldm_vq_state_dict,
    load_ldm_autoencoder,
)


def _resnet(prefix, c_in, c_out, out, g):
    out[f"{prefix}.norm1.weight"], out[f"{prefix}.norm1.bias"] = (
        torch.randn(c_in, generator=g),
        torch.randn(c_in, generator=g),
    )
    out[f"{prefix}.conv1.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g)
    out[f"{prefix}.conv1.bias"] = torch.randn(c_out, generator=g)
    out[f"{prefix}.norm2.weight"], out[f"{prefix}.norm2.bias"] = (
        torch.randn(c_out, generator=g),
        torch.randn(c_out, generator=g),
    )
    out[f"{prefix}.conv2.weight"] = torch.randn(c_out, c_out, 3, 3, generator=g)
    out[f"{prefix}.conv2.bias"] = torch.randn(c_out, generator=g)
    if c_in != c_out:
        out[f"{prefix}.nin_shortcut.weight"] = torch.randn(c_out, c_in, 1, 1, generator=g)
        out[f"{prefix}.nin_shortcut.bias"] = torch.randn(c_out, generator=g)


def _attn(prefix, c, out, g):
    out[f"{prefix}.norm.weight"], out[f"{prefix}.norm.bias"] = (
        torch.randn(c, generator=g),
        torch.randn(c, generator=g),
    )
    for name in ("q", "k", "v", "proj_out"):
        out[f"{prefix}.{name}.weight"] = torch.randn(c, c, 1, 1, generator=g)
        out[f"{prefix}.{name}.bias"] = torch.randn(c, generator=g)


def _conv(prefix, c_out, c_in, k, out, g):
    out[f"{prefix}.weight"] = torch.randn(c_out, c_in, k, k, generator=g)
    out[f"{prefix}.bias"] = torch.randn(c_out, generator=g)


def ldm_vq_state_dict(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z, n_embed, seed=0):
    """A random state dict with exactly the keys and shapes of an LDM VQModel training checkpoint."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    levels = len(ch_mult)
    _conv("encoder.conv_in", ch, 3, 3, out, g)
    in_mult = (1, *ch_mult)
    res = resolution
    block_in = ch
    for i in range(levels):
        block_in, block_out = ch * in_mult[i], ch * ch_mult[i]
        for j in range(num_res_blocks):
            _resnet(f"encoder.down.{i}.block.{j}", block_in, block_out, out, g)
            block_in = block_out
            if res in attn_resolutions:
                _attn(f"encoder.down.{i}.attn.{j}", block_in, out, g)
        if i != levels - 1:
            _conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3, out, g)
            res //= 2
    _resnet("encoder.mid.block_1", block_in, block_in, out, g)
    _attn("encoder.mid.attn_1", block_in, out, g)
    _resnet("encoder.mid.block_2", block_in, block_in, out, g)
    out["encoder.norm_out.weight"], out["encoder.norm_out.bias"] = (
        torch.randn(block_in, generator=g),
        torch.randn(block_in, generator=g),
    )
    _conv("encoder.conv_out", z, block_in, 3, out, g)
    block_in = ch * ch_mult[-1]
    res = resolution // 2 ** (levels - 1)
    _conv("decoder.conv_in", block_in, z, 3, out, g)
    _resnet("decoder.mid.block_1", block_in, block_in, out, g)
    _attn("decoder.mid.attn_1", block_in, out, g)
    _resnet("decoder.mid.block_2", block_in, block_in, out, g)
    for i in reversed(range(levels)):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            _resnet(f"decoder.up.{i}.block.{j}", block_in, block_out, out, g)
            block_in = block_out
            if res in attn_resolutions:
                _attn(f"decoder.up.{i}.attn.{j}", block_in, out, g)
        if i != 0:
            _conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3, out, g)
            res *= 2
    out["decoder.norm_out.weight"], out["decoder.norm_out.bias"] = (
        torch.randn(block_in, generator=g),
        torch.randn(block_in, generator=g),
    )
    _conv("decoder.conv_out", 3, block_in, 3, out, g)
    _conv("quant_conv", z, z, 1, out, g)
    _conv("post_quant_conv", z, z, 1, out, g)
    out["quantize.embedding.weight"] = torch.randn(n_embed, z, generator=g)
    # Training-only weights present in the public model.ckpt (PatchGAN discriminator, LPIPS).
    out["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4, generator=g)
    out["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1, generator=g)
    return out


SMALL_F4 = dict(ch=16, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=(), resolution=64, z=3, n_embed=32)
SMALL_F8 = dict(ch=16, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(8,), resolution=64, z=4, n_embed=32)


def _config(spec) -> AutoencoderConfig:
    ldm_yaml = {
        "model": {
            "params": {
                "embed_dim": spec["z"],
                "n_embed": spec["n_embed"],
                "ddconfig": {
                    "double_z": False,
                    "z_channels": spec["z"],
                    "resolution": spec["resolution"],
                    "ch": spec["ch"],
                    "ch_mult": list(spec["ch_mult"]),
                    "num_res_blocks": spec["num_res_blocks"],
                    "attn_resolutions": list(spec["attn_resolutions"]),
                },
            }
        }
    }
    return autoencoder_config_from_ldm(ldm_yaml, norm_num_groups=8)


@pytest.mark.parametrize("spec", [SMALL_F4, SMALL_F8], ids=["f4", "f8"])
def test_converter_places_every_ldm_tensor(spec, tmp_path):
    ldm = ldm_vq_state_dict(**spec)
    config = _config(spec)
    assert config.down_factor == 2 ** (len(spec["ch_mult"]) - 1)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": ldm, "global_step": 10}, path)
    model = load_ldm_autoencoder(path, config)
    vq = model.vq
    levels = len(spec["ch_mult"])
    assert torch.equal(
        vq.encoder.down_blocks[1].resnets[0].conv_shortcut.weight,
        ldm["encoder.down.1.block.0.nin_shortcut.weight"],
    )
    assert torch.equal(vq.encoder.down_blocks[0].downsamplers[0].conv.bias, ldm["encoder.down.0.downsample.conv.bias"])
    # decoder.up is indexed from the highest resolution, diffusers' up_blocks from the lowest.
    assert torch.equal(
        vq.decoder.up_blocks[0].resnets[2].conv1.weight, ldm[f"decoder.up.{levels - 1}.block.2.conv1.weight"]
    )
    assert torch.equal(vq.decoder.up_blocks[levels - 1].resnets[0].norm1.bias, ldm["decoder.up.0.block.0.norm1.bias"])
    assert torch.equal(
        vq.decoder.up_blocks[0].upsamplers[0].conv.weight,
        ldm[f"decoder.up.{levels - 1}.upsample.conv.weight"],
    )
    assert torch.equal(vq.encoder.mid_block.attentions[0].to_q.weight, ldm["encoder.mid.attn_1.q.weight"][:, :, 0, 0])
    assert torch.equal(
        vq.decoder.mid_block.attentions[0].to_out[0].weight,
        ldm["decoder.mid.attn_1.proj_out.weight"][:, :, 0, 0],
    )
    assert torch.equal(vq.decoder.conv_norm_out.weight, ldm["decoder.norm_out.weight"])
    assert torch.equal(vq.quantize.embedding.weight, ldm["quantize.embedding.weight"])
    if spec["attn_resolutions"]:
        assert torch.equal(
            vq.encoder.down_blocks[levels - 1].attentions[1].to_v.weight,
            ldm[f"encoder.down.{levels - 1}.attn.1.v.weight"][:, :, 0, 0],
        )
        assert torch.equal(
            vq.decoder.up_blocks[0].attentions[2].group_norm.bias,
            ldm[f"decoder.up.{levels - 1}.attn.2.norm.bias"],
        )
    latents = model.encode(torch.zeros(1, 3, 64, 64))
    assert latents.shape == (1, spec["z"], 64 // config.down_factor, 64 // config.down_factor)


def test_converter_refuses_unknown_and_missing_keys(tmp_path):
    config = _config(SMALL_F4)
    ldm = ldm_vq_state_dict(**SMALL_F4)
    with pytest.raises(CheckpointError, match="not part of an LDM VQ autoencoder"):
        convert_ldm_vq_state_dict({**ldm, "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, config)
    missing = dict(ldm)
    del missing["decoder.up.1.block.0.conv2.weight"]
    torch.save(missing, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="1 missing"):
        load_ldm_autoencoder(tmp_path / "missing.ckpt", config)
    torch.save(ldm, tmp_path / "f4.ckpt")
    with pytest.raises(CheckpointError, match="another shape"):
        load_ldm_autoencoder(tmp_path / "f4.ckpt", _config({**SMALL_F4, "ch": 8}))


def test_full_ldm_checkpoint_prefix_is_accepted():
    config = _config(SMALL_F4)
    ldm = {f"first_stage_model.{k}": v for k, v in ldm_vq_state_dict(**SMALL_F4).items()}
    ldm["model.diffusion_model.out.2.weight"] = torch.zeros(3)  # the rest of an LDM checkpoint is ignored
    converted = convert_ldm_vq_state_dict(ldm, config)
    assert "vq.quantize.embedding.weight" in converted


def test_public_configs_translate():
    vq_f4_yaml = {
        "embed_dim": 3,
        "n_embed": 8192,
        "ddconfig": {
            "double_z": False,
            "z_channels": 3,
            "resolution": 256,
            "ch": 128,
            "ch_mult": [1, 2, 4],
            "num_res_blocks": 2,
            "attn_resolutions": [],
        },
    }
    vq_f8_yaml = {
        "embed_dim": 4,
        "n_embed": 16384,
        "ddconfig": {
            "double_z": False,
            "z_channels": 4,
            "resolution": 256,
            "ch": 128,
            "ch_mult": [1, 2, 2, 4],
            "num_res_blocks": 2,
            "attn_resolutions": [32],
        },
    }
    assert autoencoder_config_from_ldm(vq_f4_yaml) == LDM_VQ_F4
    assert autoencoder_config_from_ldm(vq_f8_yaml) == LDM_VQ_F8
    with torch.device("meta"):
        from difftalk.models.autoencoder import Autoencoder

        count = sum(p.numel() for p in Autoencoder(LDM_VQ_F4).parameters())
    assert 50e6 < count < 60e6  # LDM vq-f4 has ~55M parameters


def test_pickled_objects_are_not_unpickled(tmp_path):
    import pickle

    path = tmp_path / "evil.ckpt"

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    with open(path, "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_ldm_autoencoder(path, _config(SMALL_F4))
