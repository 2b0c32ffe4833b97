"""difftalk: speech-driven talking-head video with a conditional latent diffusion model.

Each sub-command is a thin call into the library; heavy imports happen inside the handlers so that
``difftalk --help`` is instant. Results go to stdout, logging to stderr; options shared by several
commands live in :mod:`difftalk.cli_options`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from difftalk import __version__
from difftalk.cli_app import add_app_command
from difftalk.cli_generate import add_generation_commands
from difftalk.cli_options import Handler, HelpFormatter, add_command, positive_int, resolve_device
from difftalk.cli_stream import add_stream_command
from difftalk.cli_train import add_training_commands
from difftalk.errors import MissingExtraError

logger = logging.getLogger("difftalk")


def _cmd_demo(args: argparse.Namespace) -> int:
    from difftalk.demo import DEMO_MODEL, DEMO_STUDENT

    model = DEMO_MODEL if args.teacher else DEMO_STUDENT
    if not args.toy and not (model / "weights.safetensors").is_file():
        logger.warning("the shipped demo model is not in %s: running the toy demo instead", model)
        args.toy = True
    if args.toy:
        from difftalk.demo_toy import run_demo as run_toy

        toy = run_toy(out_dir=args.out, steps=args.steps or 400, seed=args.seed or 0, progress=not args.no_progress)
        logger.info("final training loss %.4f; mean mouth error %.3f", toy.final_loss, toy.mouth_error)
        logger.info("wrote %s (rows: ground truth | masked input | generated)", toy.grid_path)
        return 0
    from difftalk.demo import DEMO_SEED, run_demo

    result = run_demo(
        out_dir=args.out, steps=args.steps, seed=args.seed or DEMO_SEED, progress=not args.no_progress, model=model
    )

    def describe(score: Any) -> str:
        return "n/a" if score is None else f"LSE-C {score.lse_c:.3f}, LSE-D {score.lse_d:.3f}, offset {score.offset}"

    sys.stdout.write(
        f"\nvideo: {result.video}\nframes (original | dubbed): {result.strip}\n"
        f"lip sync, dubbed video with the new speech:   {describe(result.sync_dubbed)}\n"
        f"lip sync, original video with its own speech: {describe(result.sync_original)}\n"
        f"lip sync, original video with the new speech: {describe(result.sync_undubbed)}\n"
        f"generation took {result.seconds:.0f} s\n"
    )
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
    lines = [
        f"{args.config}: {ae.image_size}² faces, f={ae.down_factor} → latent "
        f"{ae.latent_size}×{ae.latent_size}×{ae.latent_channels}; DDIM {config.sampler.num_steps} steps"
    ]
    for name, module in parts.items():
        lines.append(f"  {name:<17} {sum(p.numel() for p in module.parameters()):>12,} parameters")
    sys.stdout.write("\n".join(lines) + "\n")
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


def _cmd_synth(args: argparse.Namespace) -> int:
    from difftalk.synth.generate import run_synth

    summary = run_synth(
        args.out_dir,
        identities=args.identities,
        seconds=args.seconds,
        size=args.size,
        seed=args.seed,
        clips_per_identity=args.clips_per_identity,
        test_fraction=args.test_fraction,
        progress=not args.no_progress,
    )
    logger.info("%s", summary)
    return 0


def _identity_pattern(name: str) -> str:
    from difftalk.preprocess.manifest import DEFAULT_IDENTITY_PATTERN, HDTF_IDENTITY_PATTERN

    return {"default": DEFAULT_IDENTITY_PATTERN, "HDTF": HDTF_IDENTITY_PATTERN}.get(name, name)


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from difftalk.preprocess.run import PreprocessOptions, run_preprocess

    options = PreprocessOptions(
        crop_sizes=tuple(args.crop_size),
        features=tuple(args.features),
        precomputed_dir=args.precomputed_dir or "",
        landmarks=args.landmarks,
        detector=args.detector,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        identity_pattern=_identity_pattern(args.identity_pattern),
        workers=args.workers,
        max_seconds=args.max_seconds,
    )
    report = run_preprocess(args.videos_dir, args.data_dir, options, progress=not args.no_progress)
    done = [c for c in report.clips if c.status == "done"]
    skipped = [c for c in report.clips if c.status == "skipped"]
    logger.info(
        "%d clip(s) prepared, %d already done, %d failed → %s",
        len(done),
        len(skipped),
        len(report.failed),
        report.data_dir,
    )
    return 1 if report.failed and not (done or skipped) else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from difftalk.eval.evaluate import evaluate_results

    device = resolve_device(args.device, default="cpu")
    evaluate_results(
        args.results_dir,
        args.data,
        args.syncnet,
        lpips_weights=args.lpips_weights,
        device=device,
        progress=not args.no_progress,
    )
    logger.info("wrote %s/metrics.json and metrics.md", args.results_dir)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from difftalk.io.watermark import verify_file

    result = verify_file(args.file, max_frames=args.max_frames)
    sys.stdout.write(result.summary + "\n")
    return 0 if result.watermark.found else 1


def _cmd_hdtf_clips(args: argparse.Namespace) -> int:
    import subprocess

    from difftalk.preprocess.hdtf import cut_clips, download_commands

    if args.download:
        for command in download_commands(args.annotations, args.raw_dir):
            subprocess.run(command, check=False)  # a video that is gone from YouTube must not stop the rest
    written = cut_clips(args.annotations, args.raw_dir, args.out_dir, progress=not args.no_progress)
    logger.info(
        "%d clips in %s; next: difftalk preprocess %s DATA_DIR --identity-pattern HDTF",
        len(written),
        args.out_dir,
        args.out_dir,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``difftalk`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="difftalk", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="what to do")

    demo = add_command(
        sub, "demo", "dub a never-seen synthetic identity with new speech (shipped model, CPU)", _cmd_demo
    )
    demo.add_argument("--out", default="outputs/demo", help="output folder")
    demo.add_argument(
        "--steps",
        type=positive_int,
        help="sampling steps (default: the model's: 1 for the student, DDIM 5 with --teacher; with --toy: training "
        "steps, 400)",
    )
    demo.add_argument("--seed", type=int, help="identity/speech seed (default 2026, never used in training)")
    demo.add_argument("--toy", action="store_true", help="the weight-free toy demo: train a tiny model in a minute")
    demo.add_argument(
        "--teacher",
        action="store_true",
        help="dub with the shipped teacher (DDIM 5, audio-guided) instead of its student",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    info = add_command(sub, "info", "summarise a config preset or YAML file (sizes, parameter counts)", _cmd_info)
    info.add_argument("--config", default="paper_256", help="preset name or YAML path")
    info.add_argument("--verbose-config", action="store_true", help="also print the resolved config as YAML")

    convert = add_command(
        sub,
        "convert-ldm-vq",
        "convert a public LDM vq-f4/vq-f8 first-stage checkpoint to a difftalk autoencoder",
        _cmd_convert_ldm,
    )
    convert.add_argument("checkpoint", help="LDM model.ckpt (or .safetensors) of the VQ autoencoder")
    convert.add_argument("-o", "--output", required=True, help="output checkpoint folder")
    convert.add_argument("--preset", choices=["vq-f4", "vq-f8"], default="vq-f4", help="public config")
    convert.add_argument("--ldm-config", help="LDM config.yaml of the checkpoint (overrides --preset)")

    synth = add_command(sub, "synth", "make the synthetic talking-face benchmark (videos + ground truth)", _cmd_synth)
    synth.add_argument("out_dir", help="output folder")
    synth.add_argument("--identities", type=positive_int, default=20, help="number of identities")
    synth.add_argument("--seconds", type=float, default=20.0, help="seconds per clip")
    synth.add_argument("--size", type=int, default=256, choices=[128, 256, 512], help="frame size in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--clips-per-identity", type=positive_int, default=1, help="clips per identity")
    synth.add_argument("--test-fraction", type=float, default=0.2, help="fraction of held-out identities")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    prep = add_command(sub, "preprocess", "turn a folder of videos into a prepared dataset", _cmd_preprocess)
    prep.add_argument("videos_dir", help="folder with the videos (any format PyAV reads)")
    prep.add_argument("data_dir", help="output dataset folder (resumable: finished clips are skipped)")
    prep.add_argument("--crop-size", type=positive_int, nargs="+", default=[256], help="crop sizes in pixels")
    prep.add_argument(
        "--features", nargs="+", default=["mel"], choices=["mel", "whisper", "precomputed"], help="audio features"
    )
    prep.add_argument("--precomputed-dir", help="folder of <video>.npy (N, 16, 29) DeepSpeech arrays")
    prep.add_argument(
        "--landmarks",
        choices=["auto", "ground_truth", "detector"],
        default="auto",
        help="auto: synthetic ground truth when present, else the detector (needs difftalk[face])",
    )
    prep.add_argument("--detector", choices=["hog", "cnn"], default="hog", help="dlib face detector")
    prep.add_argument("--test-fraction", type=float, default=0.1, help="fraction of held-out identities")
    prep.add_argument("--split-seed", type=int, default=0, help="seed of the identity split")
    prep.add_argument(
        "--identity-pattern",
        default="default",
        help="regex whose first group is a video's identity; 'HDTF' for HDTF names (docs/hdtf.md)",
    )
    prep.add_argument("--workers", type=positive_int, default=2, help="parallel worker processes")
    prep.add_argument("--max-seconds", type=float, default=0.0, help="only the first seconds of each video (0 = all)")
    prep.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    add_training_commands(sub)

    add_generation_commands(sub)

    hdtf = add_command(
        sub, "hdtf-clips", "cut downloaded HDTF videos into their annotated clips (docs/hdtf.md)", _cmd_hdtf_clips
    )
    hdtf.add_argument("annotations", help="the HDTF repository's HDTF_dataset folder")
    hdtf.add_argument("raw_dir", help="downloaded videos, named <subset>_<name>.mp4")
    hdtf.add_argument("out_dir", help="output folder for the clips")
    hdtf.add_argument("--download", action="store_true", help="first download the videos with yt-dlp")
    hdtf.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    evaluate = add_command(
        sub, "evaluate", "score a results folder: image, sync, landmark, articulation, jitter", _cmd_evaluate
    )
    evaluate.add_argument("results_dir", help="folder written by `difftalk benchmark`")
    evaluate.add_argument("--data", help="prepared dataset (default: the one named in results.json)")
    evaluate.add_argument("--syncnet", help="SyncNet expert: a train-syncnet folder or a public syncnet_v2.model")
    evaluate.add_argument("--lpips-weights", help="folder with alexnet*.pth + alex.pth (else LPIPS is unavailable)")
    evaluate.add_argument("--device", help="torch device: cpu, cuda, cuda:1, mps (default: cpu)")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    verify = add_command(sub, "verify", "check a video for the difftalk watermark and provenance metadata", _cmd_verify)
    verify.add_argument("file", help="video file (also after re-encoding)")
    verify.add_argument("--max-frames", type=positive_int, default=250, help="frames to read at most")

    add_app_command(sub)
    add_stream_command(sub)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the root logger once (the library itself only creates module loggers)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``difftalk`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    handler: Handler = args.handler
    try:
        code = handler(args)
    except (FileNotFoundError, ValueError, MissingExtraError) as exc:
        # User-facing errors carry their own explanation; no traceback from deep inside.
        logger.error("%s", exc)
        if args.verbose:
            logger.exception("details")
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    if "torch.distributed" in sys.modules:  # a (training) command that may have started a process group
        from difftalk.train.common import finish_distributed

        finish_distributed()
    return code


if __name__ == "__main__":
    sys.exit(main())
