"""Configs: every preset parses, round trips, and bad YAML is rejected with the field's name."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from difftalk.config import (
    ConfigError,
    DiffTalkConfig,
    ModelConfig,
    from_dict,
    load_config,
    parse_overrides,
    preset_names,
    replace,
    save_config,
    to_dict,
)


def test_presets_exist():
    assert {"tiny", "paper_256", "paper_512"} <= set(preset_names())


@pytest.mark.parametrize("name", ["tiny", "paper_256", "paper_512"])
def test_every_preset_round_trips(name, tmp_path):
    config = load_config(name)
    assert isinstance(config, DiffTalkConfig)
    assert from_dict(DiffTalkConfig, to_dict(config)) == config
    path = tmp_path / "resolved.yaml"
    save_config(config, path)
    assert load_config(path) == config


def test_paper_presets_have_the_paper_sizes():
    p256 = load_config("paper_256").model
    assert p256.autoencoder.block_out_channels == (128, 256, 512)
    assert p256.autoencoder.num_embeddings == 8192
    assert p256.autoencoder.down_factor == 4 and p256.autoencoder.latent_size == 64
    assert p256.unet.block_out_channels == (256, 512, 768, 1024)
    assert p256.unet.attention_levels == (False, True, True, True)
    assert p256.unet.head_dim == 32 and p256.context_dim == 128
    assert p256.diffusion.beta_schedule == "scaled_linear"
    assert (p256.diffusion.beta_start, p256.diffusion.beta_end) == (0.0015, 0.0195)
    assert load_config("paper_256").sampler.num_steps == 200
    p512 = load_config("paper_512").model
    assert p512.autoencoder.down_factor == 8 and p512.autoencoder.latent_size == 64
    assert p512.autoencoder.latent_channels == 3
    assert p512.unet == p256.unet


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    data = to_dict(load_config("tiny"))
    data["model"]["unet"]["num_layers"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model\.unet\.num_layers"):
        load_config(path)


def test_unknown_top_level_section_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(DiffTalkConfig, {"modle": {}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model.unet.head_dim": "32"}, r"model\.unet\.head_dim: expected an integer"),
        ({"model.unet.zero_init": 1}, r"model\.unet\.zero_init: expected true/false"),
        ({"model.context": "two_tokens"}, r"model\.context: must be one of"),
        (
            {"model.unet.attention_levels": [True]},
            r"model\.unet\.attention_levels: needs one entry per level",
        ),
        ({"model.context_dim": 100}, r"model\.context_dim: single_token context"),
        ({"sampler.num_steps": 0}, r"sampler\.num_steps: must be >= 1"),
        ({"model.diffusion.beta_start": 0.5}, r"model\.diffusion\.beta_start: must not exceed beta_end"),
        ({"model.audio_encoder.temporal_filter": "median"}, r"temporal_filter: must be one of"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        replace(load_config("tiny"), override)


def test_replace_overrides_and_keeps_the_rest():
    base = load_config("tiny")
    changed = replace(base, {"sampler.num_steps": 3, "model.context": "multi_token"})
    assert changed.sampler.num_steps == 3 and changed.model.context == "multi_token"
    assert changed.model.unet == base.model.unet


def test_set_overrides_are_parsed_as_yaml_and_need_an_equals_sign():
    items = ["train.steps=500", "model.unet.attention_levels=[false, true]", "train.autoencoder=''"]
    overrides = parse_overrides(items)
    assert overrides == {"train.steps": 500, "model.unet.attention_levels": [False, True], "train.autoencoder": ""}
    assert replace(load_config("tiny"), overrides).train.steps == 500
    assert parse_overrides(None) == {}
    for bad in ("train.steps", "=5"):
        with pytest.raises(ConfigError, match="key=value"):
            parse_overrides([bad])


def test_model_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().context_dim = 3  # type: ignore[misc]


def test_missing_preset_names_the_choices():
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_config("no_such_preset")


def test_every_trainer_config_validates_the_same_fabric_fields():
    from difftalk.config import AutoencoderTrainConfig, TrainConfig
    from difftalk.config.training import FabricConfig
    from difftalk.train.lipgan import LipGANTrainConfig
    from difftalk.train.syncnet import SyncNetTrainConfig

    for cls in (TrainConfig, AutoencoderTrainConfig, SyncNetTrainConfig, LipGANTrainConfig):
        assert issubclass(cls, FabricConfig)
        assert from_dict(cls, {"devices": 2, "strategy": "ddp"}).devices == 2
        with pytest.raises(ConfigError, match="devices"):
            from_dict(cls, {"devices": 0})
        with pytest.raises(ConfigError, match="strategy"):
            from_dict(cls, {"strategy": "fsdp"})
    # the small experts default to full precision, the image models pick bf16 on GPUs that support it
    assert SyncNetTrainConfig().precision == LipGANTrainConfig().precision == "32-true"
    assert TrainConfig().precision == AutoencoderTrainConfig().precision == "auto"
