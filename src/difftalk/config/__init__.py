"""Typed configuration for every difftalk component, and strict YAML loading.

Each component has one dataclass (model configs are frozen and saved beside the weights); the YAML
presets in ``configs/`` only fill their fields. Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the field by its dotted path (``model.unet.head_dim``). There are no
import-path strings: variants are closed ``Literal`` choices dispatched by explicit ``if``/``elif``.

Every trainer's config is here: ``TrainConfig`` / ``AutoencoderTrainConfig`` / ``DistillConfig`` (sections
of a whole :class:`DiffTalkConfig`), ``SyncNetTrainConfig`` and ``LipGANTrainConfig`` (a config of their own, YAML
sections ``syncnet_train`` / ``lipgan_train``); each names its data and run folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from difftalk.config.distill import DistillConfig
from difftalk.config.fields import (
    ConfigError,
    from_dict,
    load_yaml,
    parse_overrides,
    replace,
    require,
    save_yaml,
    to_dict,
)
from difftalk.config.lipgan import LipGANConfig, LipGANTrainConfig
from difftalk.config.model import (
    AudioEncoderConfig,
    AutoencoderConfig,
    DiffusionConfig,
    LandmarkEncoderConfig,
    ModelConfig,
    SamplerConfig,
    UNetConfig,
)
from difftalk.config.syncnet import SyncNetConfig, SyncNetTrainConfig
from difftalk.config.training import AutoencoderTrainConfig, DataConfig, TrainConfig

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"

__all__ = [
    "PRESETS_DIR",
    "AudioEncoderConfig",
    "AutoencoderConfig",
    "AutoencoderTrainConfig",
    "ConfigError",
    "DataConfig",
    "DiffTalkConfig",
    "DiffusionConfig",
    "DistillConfig",
    "LandmarkEncoderConfig",
    "LipGANConfig",
    "LipGANTrainConfig",
    "ModelConfig",
    "SamplerConfig",
    "SyncNetConfig",
    "SyncNetTrainConfig",
    "TrainConfig",
    "UNetConfig",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "preset_names",
    "replace",
    "resolve_config_path",
    "save_config",
    "to_dict",
]


@dataclass(frozen=True)
class DiffTalkConfig:
    """A whole experiment: the model, how to sample it, the data, both training stages and distillation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    autoencoder_train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        require(
            self.sampler.num_steps <= self.model.diffusion.num_train_timesteps,
            "sampler.num_steps",
            f"{self.sampler.num_steps} exceeds model.diffusion.num_train_timesteps="
            f"{self.model.diffusion.num_train_timesteps}",
        )
        require(
            self.train.sample_steps <= self.model.diffusion.num_train_timesteps,
            "train.sample_steps",
            "exceeds model.diffusion.num_train_timesteps",
        )
        total, grid = self.model.diffusion.num_train_timesteps, self.distill.original_inference_steps
        require(grid <= total, "distill.original_inference_steps", f"{grid} exceeds num_train_timesteps={total}")
        require(
            self.distill.skip % (total // grid) == 0,
            "distill.skip",
            f"{self.distill.skip} must be a multiple of num_train_timesteps // original_inference_steps = "
            f"{total // grid} (the grid spacing)",
        )


def preset_names() -> list[str]:
    """Names of the presets shipped in ``configs/``."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the shipped preset of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise FileNotFoundError(
        f"config {str(name_or_path)!r} is neither a YAML file nor a preset; presets: {', '.join(preset_names())}"
    )


def load_config(name_or_path: str | Path) -> DiffTalkConfig:
    """Load a preset name (``tiny``, ``paper_256``, ``paper_512``, …) or a YAML file."""
    path = resolve_config_path(name_or_path)
    try:
        return from_dict(DiffTalkConfig, load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_config(config: DiffTalkConfig, path: str | Path) -> None:
    """Write the resolved config of a run as YAML."""
    save_yaml(config, path)
