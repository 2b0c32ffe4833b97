"""The training sub-commands of ``difftalk``: train, train-autoencoder, distill, train-syncnet, train-lipgan.

Each trainer's ``--set`` keys are ``<section>.<field>``, named after its YAML section (``train``,
``autoencoder_train``, ``distill``, ``syncnet_train``, ``lipgan_train``); the SyncNet and LipGAN trainers also take
the bare ``<field>`` of earlier versions. Every trainer is called as ``train_X(config, resume, progress)``
(``--data`` / ``--run-dir`` override the config's folders). Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from difftalk.cli_options import add_command

logger = logging.getLogger(__name__)

TRAIN_SECTIONS = {
    "train": "train",
    "train-autoencoder": "autoencoder_train",
    "distill": "distill",
    "train-syncnet": "syncnet_train",
    "train-lipgan": "lipgan_train",
}
"""The config section (and ``--set`` prefix) of each training command."""

DIFFTALK_SECTIONS = ("model", "sampler", "data", "train", "autoencoder_train", "distill")
"""Top-level sections of a DiffTalk experiment config (``difftalk train`` / ``train-autoencoder`` / ``distill``)."""

EXPERIMENT_COMMANDS = ("train", "train-autoencoder", "distill")
"""The training commands that read a whole experiment config (the others read their section only)."""
TRAINER_SECTIONS = ("train", "autoencoder_train", "distill")
"""The sections of those commands' own settings: each command reads its own one only."""


def section_yaml(data: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The fields of a SyncNet/LipGAN training YAML: its ``section:`` mapping, or the file's top level."""
    if set(data) == {section} and isinstance(data[section], Mapping):
        return dict(data[section])
    return dict(data)


def training_overrides(items: Sequence[str] | None, command: str, config: Any) -> dict[str, Any]:
    """``--set key=value`` items of a training command → dotted overrides of its config dataclass.

    ``train`` / ``train-autoencoder`` / ``distill`` (a whole experiment config): keys are ``<section>.<field>``
    of the YAML (``train.steps``, ``distill.steps``, ``data.num_workers``, ``model.unet.head_dim``); a key in
    another trainer's section, which the command does not read, is warned about.
    ``train-syncnet`` / ``train-lipgan`` (the config is the section itself): ``syncnet_train.<field>`` /
    ``lipgan_train.<field>``, and for compatibility the bare ``<field>``.

    Raises:
        ConfigError: ``key=value`` is malformed, or the key belongs to no section of this command.
    """
    from difftalk.config import ConfigError, parse_overrides

    section = TRAIN_SECTIONS[command]
    overrides = parse_overrides(items)
    if command in EXPERIMENT_COMMANDS:
        for key in overrides:
            head = key.split(".", 1)[0]
            if head not in DIFFTALK_SECTIONS or "." not in key:
                raise ConfigError(
                    f"--set {key}: `difftalk {command}` takes <section>.<field> keys, e.g. {section}.steps=500 "
                    f"(sections: {', '.join(DIFFTALK_SECTIONS)})"
                )
            if command == "distill" and head == "model":
                logger.warning("--set %s: `difftalk distill` ignores the model section (the teacher's is used)", key)
            if head in TRAINER_SECTIONS and head != section:
                logger.warning(
                    "--set %s: `difftalk %s` does not read the %s section; did you mean %s.%s?",
                    key,
                    command,
                    head,
                    section,
                    key.split(".", 1)[1],
                )
        return overrides
    fields = {f.name for f in dataclasses.fields(config)}
    result: dict[str, Any] = {}
    for key, value in overrides.items():
        bare = key.removeprefix(f"{section}.")
        if bare.split(".", 1)[0] not in fields:
            raise ConfigError(
                f"--set {key}: `difftalk {command}` takes {section}.<field> keys (or the bare <field>), e.g. "
                f"{section}.steps=500; fields: {', '.join(sorted(fields))}"
            )
        result[bare] = value
    return result


def _add_train_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """``--config``, ``--data``, ``--run-dir``, ``--set``, ``--restart``, ``--no-progress`` of a training command."""
    section = TRAIN_SECTIONS[command]
    if command == "distill":
        parser.add_argument("--config", help="preset name or YAML path with a distill: section (default: built-in)")
        parser.add_argument("--data", help="prepared dataset folder (overrides data.data_dir)")
        set_help = (
            "override a config field by its YAML path <section>.<field>, e.g. distill.steps=500 or "
            "data.num_workers=4 (repeatable; values are parsed as YAML; the model is the teacher's)"
        )
    elif command in EXPERIMENT_COMMANDS:
        parser.add_argument("--config", required=True, help="preset name or YAML path")
        parser.add_argument("--data", help="prepared dataset folder (overrides data.data_dir)")
        set_help = (
            f"override a config field by its YAML path <section>.<field>, e.g. {section}.steps=500 or "
            "data.num_workers=4 (repeatable; values are parsed as YAML)"
        )
    else:
        parser.add_argument("--config", help=f"YAML with {section} fields (at the top level or under {section}:)")
        parser.add_argument("--data", help=f"prepared dataset folder (overrides {section}.data_dir)")
        set_help = _set_help(command)
    parser.add_argument("--run-dir", help=f"run folder (overrides {section}.run_dir)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    parser.add_argument(
        "--restart", "--no-resume", action="store_true", help="ignore an existing checkpoint in the run folder"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(train_section=section)


def _set_help(command: str) -> str:
    """Help of ``--set`` for ``train-syncnet`` / ``train-lipgan``."""
    section = TRAIN_SECTIONS[command]
    return (
        f"override a config field, e.g. {section}.steps=600 or {section}.batch_size=16 (repeatable; values are "
        "parsed as YAML; the bare field name, e.g. steps=600, is still accepted)"
    )


def _load_config_with_overrides(args: argparse.Namespace) -> Any:
    """``--config`` plus ``--set <section>.<field>=value`` overrides (values parsed as YAML)."""
    from difftalk.config import DiffTalkConfig, load_config, replace

    config = load_config(args.config) if args.config else DiffTalkConfig()
    overrides = training_overrides(args.set, args.command, config)
    if getattr(args, "data", None):
        overrides["data.data_dir"] = args.data
    if getattr(args, "run_dir", None):
        overrides[f"{args.train_section}.run_dir"] = args.run_dir
    if getattr(args, "init_from", None):  # the start's autoencoder replaces the preset's train.autoencoder
        overrides.update({"train.init_from": args.init_from, "train.autoencoder": ""})
    if getattr(args, "syncnet", None) and args.command == "train":
        overrides["train.syncnet"] = args.syncnet
    return replace(config, overrides) if overrides else config


def _cmd_train(args: argparse.Namespace) -> int:
    from difftalk.train.diffusion import train_diffusion

    config = _load_config_with_overrides(args)
    result = train_diffusion(config, resume=not args.restart, progress=not args.no_progress)
    logger.info(
        "%s at step %d (loss %.4f); model → %s",
        "stopped" if result.stopped_early else "finished",
        result.step,
        result.last_loss,
        result.model_dir,
    )
    return 0


def _cmd_train_autoencoder(args: argparse.Namespace) -> int:
    from difftalk.train.autoencoder import train_autoencoder

    config = _load_config_with_overrides(args)
    result = train_autoencoder(config, resume=not args.restart, progress=not args.no_progress)
    logger.info("finished at step %d; autoencoder → %s", result.step, result.model_dir)
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from difftalk.config import replace
    from difftalk.train.distill import train_distill

    config = replace(_load_config_with_overrides(args), {"distill.teacher": args.teacher})
    result = train_distill(config, resume=not args.restart, progress=not args.no_progress)
    logger.info(
        "%s at step %d (loss %.4f); student → %s",
        "stopped" if result.stopped_early else "finished",
        result.step,
        result.last_loss,
        result.model_dir,
    )
    return 0


def _load_section_config(args: argparse.Namespace, base: Any, **flags: str | None) -> Any:
    """A SyncNet / LipGAN training config: ``base``, the ``--config`` YAML's section, ``flags`` given on the
    command line (e.g. ``syncnet=--syncnet``), ``--set`` overrides, then ``--data`` / ``--run-dir``."""
    from difftalk.config import from_dict, load_yaml, replace, to_dict

    config = base
    if args.config:
        fields = section_yaml(load_yaml(args.config), args.train_section)
        config = from_dict(type(base), {**to_dict(base), **fields})
    overrides: dict[str, Any] = {name: value for name, value in flags.items() if value}
    overrides |= training_overrides(args.set, args.command, config)
    overrides |= {name: value for name, value in (("data_dir", args.data), ("run_dir", args.run_dir)) if value}
    return replace(config, overrides) if overrides else config


def _cmd_train_syncnet(args: argparse.Namespace) -> int:
    from difftalk.config import SyncNetTrainConfig
    from difftalk.models.syncnet import syncnet_preset
    from difftalk.train.syncnet import train_syncnet

    config = _load_section_config(args, SyncNetTrainConfig(model=syncnet_preset(args.preset)))
    result = train_syncnet(config, resume=not args.restart, progress=not args.no_progress)
    logger.info("finished at step %d; expert → %s", result.step, result.model_dir)
    return 0


def _cmd_train_lipgan(args: argparse.Namespace) -> int:
    from difftalk.config import LipGANTrainConfig
    from difftalk.train.lipgan import train_lipgan

    config = _load_section_config(args, LipGANTrainConfig(), syncnet=args.syncnet)
    result = train_lipgan(config, resume=not args.restart, progress=not args.no_progress)
    logger.info("finished at step %d; generator → %s", result.step, result.model_dir)
    return 0


def add_training_commands(sub: Any) -> None:
    """Register the five training sub-commands on ``sub`` (the ``difftalk`` sub-parsers)."""
    train = add_command(sub, "train", "train the diffusion model (autoencoder frozen)", _cmd_train)
    _add_train_arguments(train, "train")
    train.add_argument(
        "--init-from",
        metavar="DIR",
        help="start a new run from a trained checkpoint (fine-tuning: its weights, autoencoder and model section; "
        "sets train.init_from)",
    )
    train.add_argument(
        "--syncnet",
        metavar="DIR",
        help="sync expert for the expert sync loss (sets train.syncnet; the loss is on with train.sync_weight > 0)",
    )
    train_ae = add_command(
        sub,
        "train-autoencoder",
        "train the VQ autoencoder (f=4 or f=8) on face crops",
        _cmd_train_autoencoder,
    )
    _add_train_arguments(train_ae, "train-autoencoder")
    distill = add_command(
        sub,
        "distill",
        "distil a trained model into a 1-4 step student (latent consistency; --set distill.method=direct: one step)",
        _cmd_distill,
    )
    distill.add_argument("--teacher", required=True, help="the teacher's checkpoint folder (difftalk train's model)")
    _add_train_arguments(distill, "distill")

    syncnet = add_command(
        sub,
        "train-syncnet",
        "train the audio-visual sync expert on a prepared dataset",
        _cmd_train_syncnet,
    )
    _add_train_arguments(syncnet, "train-syncnet")
    syncnet.add_argument("--preset", choices=["small", "syncnet_v2"], default="small", help="architecture")

    lipgan = add_command(
        sub,
        "train-lipgan",
        "train the Wav2Lip-style GAN baseline on a prepared dataset",
        _cmd_train_lipgan,
    )
    _add_train_arguments(lipgan, "train-lipgan")
    lipgan.add_argument("--syncnet", help="frozen sync expert for the sync loss (a train-syncnet folder)")
