"""difftalk: speech-driven talking-head video with a conditional latent diffusion model.

Each sub-command is a thin call into the library; heavy imports happen inside the handlers so that
``difftalk --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

logger = logging.getLogger("difftalk")

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from difftalk.demo import run_demo

    result = run_demo(out_dir=args.out, steps=args.steps, seed=args.seed, progress=not args.no_progress)
    logger.info("final training loss %.4f; mean mouth error %.3f", result.final_loss, result.mouth_error)
    logger.info("wrote %s (rows: ground truth | masked input | generated)", result.grid_path)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from difftalk.config import load_config, to_dict
    from difftalk.models.difftalk import DiffTalkModel

    config = load_config(args.config)
    with torch.device("meta"):
        model = DiffTalkModel(config.model)
    parts: dict[str, torch.nn.Module] = {
        "autoencoder": model.autoencoder,
        "audio_encoder": model.audio_encoder,
        "landmark_encoder": model.landmark_encoder,
        "unet": model.unet,
    }
    ae = config.model.autoencoder
    logger.info(
        "%s: %d² faces, f=%d → latent %d×%d×%d; DDIM %d steps",
        args.config,
        ae.image_size,
        ae.down_factor,
        ae.latent_size,
        ae.latent_size,
        ae.latent_channels,
        config.sampler.num_steps,
    )
    for name, module in parts.items():
        logger.info("  %-17s %12s parameters", name, f"{sum(p.numel() for p in module.parameters()):,}")
    if args.verbose_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(to_dict(config), sort_keys=False))
    return 0


def _cmd_convert_ldm(args: argparse.Namespace) -> int:
    from difftalk.models.ldm_convert import (
        LDM_VQ_F4,
        LDM_VQ_F8,
        autoencoder_config_from_ldm,
        load_ldm_autoencoder,
    )

    if args.ldm_config:
        from difftalk.config import load_yaml

        config = autoencoder_config_from_ldm(load_yaml(args.ldm_config))
    else:
        config = LDM_VQ_F4 if args.preset == "vq-f4" else LDM_VQ_F8
    model = load_ldm_autoencoder(args.checkpoint, config)
    model.save_pretrained(args.output)
    logger.info("converted %s → %s", args.checkpoint, args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``difftalk`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="difftalk", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo", help="train a tiny model on a toy face and regenerate its mouths (CPU, ~1 min)"
    )
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--steps", type=int, default=400, help="training steps (default: 400)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(handler=_cmd_demo)

    info = sub.add_parser("info", help="summarise a config preset or YAML file (sizes, parameter counts)")
    info.add_argument("--config", default="paper_256", help="preset name or YAML path (default: paper_256)")
    info.add_argument("--verbose-config", action="store_true", help="also print the resolved config as YAML")
    info.set_defaults(handler=_cmd_info)

    convert = sub.add_parser(
        "convert-ldm-vq",
        help="convert a public LDM vq-f4/vq-f8 first-stage checkpoint to a difftalk autoencoder",
    )
    convert.add_argument("checkpoint", help="LDM model.ckpt (or .safetensors) of the VQ autoencoder")
    convert.add_argument("-o", "--output", required=True, help="output checkpoint folder")
    convert.add_argument(
        "--preset", choices=["vq-f4", "vq-f8"], default="vq-f4", help="public config (default: vq-f4)"
    )
    convert.add_argument("--ldm-config", help="LDM config.yaml of the checkpoint (overrides --preset)")
    convert.set_defaults(handler=_cmd_convert_ldm)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the root logger once (the library itself only creates module loggers)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``difftalk`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (FileNotFoundError, ValueError) as exc:
        # User-facing errors carry their own explanation; no traceback from deep inside.
        logger.error("%s", exc)
        if args.verbose:
            logger.exception("details")
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
