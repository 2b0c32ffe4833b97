"""difftalk: speech-driven talking-head video with a conditional latent diffusion model.

Each sub-command is a thin call into the library; heavy imports happen inside the handlers so that
``difftalk --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger("difftalk")
NOISE_HELP = "initial DDIM noise: a new draw per frame, or one draw for the whole video (less flicker)"

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from difftalk.demo import DEMO_MODEL

    if not args.toy and not (DEMO_MODEL / "weights.safetensors").is_file():
        logger.warning("the shipped demo model is not in %s: running the toy demo instead", DEMO_MODEL)
        args.toy = True
    if args.toy:
        from difftalk.demo_toy import run_demo as run_toy

        toy = run_toy(out_dir=args.out, steps=args.steps or 400, seed=args.seed or 0, progress=not args.no_progress)
        logger.info("final training loss %.4f; mean mouth error %.3f", toy.final_loss, toy.mouth_error)
        logger.info("wrote %s (rows: ground truth | masked input | generated)", toy.grid_path)
        return 0
    from difftalk.demo import DEMO_SEED, run_demo

    result = run_demo(
        out_dir=args.out, steps=args.steps or 25, seed=args.seed or DEMO_SEED, progress=not args.no_progress
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


def _load_config_with_overrides(args: argparse.Namespace) -> Any:
    """``--config`` plus ``--set key=value`` overrides (values parsed as YAML)."""
    from difftalk.config import load_config, parse_overrides, replace

    config = load_config(args.config)
    overrides = parse_overrides(args.set)
    if getattr(args, "data", None):
        overrides["data.data_dir"] = args.data
    if getattr(args, "run_dir", None):
        overrides[f"{args.train_section}.run_dir"] = args.run_dir
    return replace(config, overrides) if overrides else config


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


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from difftalk.pipeline import DiffTalkPipeline, GenerateOptions

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    options = GenerateOptions(
        num_steps=args.steps,
        progressive_reference=not args.no_progressive_reference,
        colour_fix=not args.no_colour_fix,
        reference_frame=args.reference_frame,
        lanes=args.lanes,
        length=args.length,
        loop=args.loop,
        temporal_smoothing=args.temporal_smoothing,
        noise=args.noise,
        landmarks=args.landmarks,
        seed=args.seed,
        watermark=True,
        progress=not args.no_progress,
    )
    pipe = DiffTalkPipeline.from_pretrained(args.checkpoint, device=device, dtype=dtype)
    if args.fast:
        pipe.optimize(channels_last=True, compile_unet=device.startswith("cuda"))
    pipe.set_reference(args.reference, options)
    result = pipe.generate(args.audio, args.output, options)
    logger.info(
        "wrote %s (%d frames, %.2f s, %.1f frames/s)",
        result.output,
        result.num_frames,
        result.duration,
        result.frames_per_second,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from difftalk.evaluate import evaluate_results

    evaluate_results(
        args.results_dir,
        args.data,
        args.syncnet,
        lpips_weights=args.lpips_weights,
        device=args.device or "cpu",
        progress=not args.no_progress,
    )
    logger.info("wrote %s/metrics.json and metrics.md", args.results_dir)
    return 0


def _cmd_train_syncnet(args: argparse.Namespace) -> int:
    from difftalk.config import from_dict, parse_overrides, replace, to_dict
    from difftalk.models.syncnet import syncnet_preset
    from difftalk.train.syncnet import SyncNetTrainConfig, train_syncnet

    config = SyncNetTrainConfig(model=syncnet_preset(args.preset))
    if args.config:
        from difftalk.config import load_yaml

        config = from_dict(SyncNetTrainConfig, {**to_dict(config), **load_yaml(args.config)})
    overrides = parse_overrides(args.set)
    if overrides:
        config = replace(config, overrides)
    result = train_syncnet(config, args.data, args.run_dir, resume=not args.restart, progress=not args.no_progress)
    logger.info("finished at step %d; expert → %s", result.step, result.model_dir)
    return 0


def _cmd_train_lipgan(args: argparse.Namespace) -> int:
    from difftalk.config import from_dict, load_yaml, parse_overrides, replace, to_dict
    from difftalk.train.lipgan import LipGANTrainConfig, train_lipgan

    config = LipGANTrainConfig()
    if args.config:
        config = from_dict(LipGANTrainConfig, {**to_dict(config), **load_yaml(args.config)})
    overrides: dict[str, Any] = {"syncnet": args.syncnet} if args.syncnet else {}
    overrides |= parse_overrides(args.set)
    if overrides:
        config = replace(config, overrides)
    result = train_lipgan(config, args.data, args.run_dir, resume=not args.restart, progress=not args.no_progress)
    logger.info("finished at step %d; generator → %s", result.step, result.model_dir)
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


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from difftalk.pipeline.benchmark import run_benchmark
    from difftalk.pipeline.options import GenerateOptions

    options = GenerateOptions(
        num_steps=args.steps,
        progressive_reference=not args.no_progressive_reference,
        colour_fix=not args.no_colour_fix,
        lanes=args.lanes,
        temporal_smoothing=args.temporal_smoothing,
        noise=args.noise,
        seed=args.seed,
    )
    path = run_benchmark(
        args.data,
        args.out_dir,
        checkpoint=args.checkpoint,
        method=args.method,
        split=args.split,
        seconds=args.seconds,
        cross_audio=args.cross_audio,
        options=options,
        device=args.device or "cpu",
        max_clips=args.max_clips,
    )
    logger.info("wrote %s; next: difftalk evaluate %s --data %s", path, args.out_dir, args.data)
    return 0


def _add_train_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument("--config", required=True, help="preset name or YAML path")
    parser.add_argument("--data", help="prepared dataset folder (overrides data.data_dir)")
    parser.add_argument("--run-dir", help=f"run folder (overrides {section}.run_dir)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. train.steps=500"
    )
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in the run folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(train_section=section)


def build_parser() -> argparse.ArgumentParser:
    """The ``difftalk`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="difftalk", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="dub a never-seen synthetic identity with new speech (shipped model, CPU)")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--steps", type=int, help="DDIM steps (default 25; with --toy: training steps, 400)")
    demo.add_argument("--seed", type=int, help="identity/speech seed (default 2026, never used in training)")
    demo.add_argument("--toy", action="store_true", help="the weight-free toy demo: train a tiny model in a minute")
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
    convert.add_argument("--preset", choices=["vq-f4", "vq-f8"], default="vq-f4", help="public config (default: vq-f4)")
    convert.add_argument("--ldm-config", help="LDM config.yaml of the checkpoint (overrides --preset)")
    convert.set_defaults(handler=_cmd_convert_ldm)

    synth = sub.add_parser("synth", help="make the synthetic talking-face benchmark (videos + ground truth)")
    synth.add_argument("out_dir", help="output folder")
    synth.add_argument("--identities", type=int, default=20, help="number of identities (default: 20)")
    synth.add_argument("--seconds", type=float, default=20.0, help="seconds per clip (default: 20)")
    synth.add_argument("--size", type=int, default=256, choices=[128, 256, 512], help="frame size (default: 256)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--clips-per-identity", type=int, default=1, help="clips per identity (default: 1)")
    synth.add_argument("--test-fraction", type=float, default=0.2, help="held-out identities (default: 0.2)")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(handler=_cmd_synth)

    prep = sub.add_parser("preprocess", help="turn a folder of videos into a prepared dataset")
    prep.add_argument("videos_dir", help="folder with the videos (any format PyAV reads)")
    prep.add_argument("data_dir", help="output dataset folder (resumable: finished clips are skipped)")
    prep.add_argument("--crop-size", type=int, nargs="+", default=[256], help="crop sizes (default: 256)")
    prep.add_argument(
        "--features", nargs="+", default=["mel"], choices=["mel", "whisper", "precomputed"], help="audio features"
    )
    prep.add_argument("--precomputed-dir", help="folder of <video>.npy (N, 16, 29) DeepSpeech arrays")
    prep.add_argument(
        "--landmarks",
        choices=["auto", "ground_truth", "detector"],
        default="auto",
        help="auto: synthetic ground truth when present, else the detector",
    )
    prep.add_argument("--detector", choices=["hog", "cnn"], default="hog", help="dlib face detector")
    prep.add_argument("--test-fraction", type=float, default=0.1, help="held-out identities (default: 0.1)")
    prep.add_argument("--split-seed", type=int, default=0, help="seed of the identity split")
    prep.add_argument(
        "--identity-pattern",
        default="default",
        help="regex whose first group is a video's identity; 'HDTF' for HDTF names (docs/hdtf.md)",
    )
    prep.add_argument("--workers", type=int, default=2, help="parallel worker processes (default: 2)")
    prep.add_argument("--max-seconds", type=float, default=0.0, help="only the first seconds of each video")
    prep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    prep.set_defaults(handler=_cmd_preprocess)

    train = sub.add_parser("train", help="train the diffusion model (autoencoder frozen)")
    _add_train_arguments(train, "train")
    train.set_defaults(handler=_cmd_train)

    train_ae = sub.add_parser("train-autoencoder", help="train the VQ autoencoder (f=4 or f=8) on face crops")
    _add_train_arguments(train_ae, "autoencoder_train")
    train_ae.set_defaults(handler=_cmd_train_autoencoder)

    gen = sub.add_parser("generate", help="lip-sync a video (dubbing) or animate a photo with speech")
    gen.add_argument("--reference", required=True, help="video of the person (dubbing) or one photo (portrait)")
    gen.add_argument("--audio", required=True, help="speech: any length, rate, channels; WAV, FLAC, MP3, M4A, MP4")
    gen.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/NAME/checkpoints/model)")
    gen.add_argument("-o", "--output", required=True, help="output .mp4")
    gen.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's)")
    gen.add_argument("--no-progressive-reference", action="store_true", help="always use the fixed reference")
    gen.add_argument("--no-colour-fix", action="store_true", help="keep the autoencoder's colour cast in the mouth")
    gen.add_argument("--reference-frame", type=int, default=0, help="reference frame index (default: 0)")
    gen.add_argument("--lanes", type=int, default=1, help="parallel progressive chunks (GPU speed; default 1)")
    gen.add_argument("--length", choices=["audio", "video"], default="audio", help="output length follows")
    gen.add_argument("--loop", choices=["pingpong", "loop"], default="pingpong", help="extend a short video by")
    gen.add_argument("--temporal-smoothing", type=float, default=0.2, help="frame interpolation weight (0-0.5)")
    gen.add_argument("--noise", choices=["independent", "shared"], default="independent", help=NOISE_HELP)
    gen.add_argument("--landmarks", choices=["auto", "detector", "ground_truth"], default="auto")
    gen.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    gen.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="model precision")
    gen.add_argument("--fast", action="store_true", help="channels-last + torch.compile of the UNet (GPU)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(handler=_cmd_generate)

    hdtf = sub.add_parser("hdtf-clips", help="cut downloaded HDTF videos into their annotated clips (docs/hdtf.md)")
    hdtf.add_argument("annotations", help="the HDTF repository's HDTF_dataset folder")
    hdtf.add_argument("raw_dir", help="downloaded videos, named <subset>_<name>.mp4")
    hdtf.add_argument("out_dir", help="output folder for the clips")
    hdtf.add_argument("--download", action="store_true", help="first download the videos with yt-dlp")
    hdtf.add_argument("--no-progress", action="store_true")
    hdtf.set_defaults(handler=_cmd_hdtf_clips)

    bench = sub.add_parser("benchmark", help="generate a results folder for held-out clips (for evaluate)")
    bench.add_argument("out_dir", help="results folder")
    bench.add_argument("--data", required=True, help="prepared dataset (its source videos must exist)")
    bench.add_argument("--checkpoint", help="model folder (methods difftalk, lipgan)")
    bench.add_argument("--method", choices=["difftalk", "lipgan", "source", "static"], default="difftalk")
    bench.add_argument("--split", default="test", help="clips to use (default: test)")
    bench.add_argument("--seconds", type=float, default=4.0, help="seconds per clip (default: 4)")
    bench.add_argument("--cross-audio", action="store_true", help="drive each clip with another clip's audio")
    bench.add_argument("--max-clips", type=int, help="only the first clips")
    bench.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's)")
    bench.add_argument("--no-progressive-reference", action="store_true")
    bench.add_argument("--no-colour-fix", action="store_true")
    bench.add_argument("--lanes", type=int, default=1)
    bench.add_argument("--temporal-smoothing", type=float, default=0.2)
    bench.add_argument("--noise", choices=["independent", "shared"], default="independent", help=NOISE_HELP)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--device", help="torch device (default: cpu)")
    bench.set_defaults(handler=_cmd_benchmark)

    evaluate = sub.add_parser("evaluate", help="score a results folder: image, sync, landmark, articulation, jitter")
    evaluate.add_argument("results_dir", help="folder written by `difftalk benchmark`")
    evaluate.add_argument("--data", help="prepared dataset (default: the one named in results.json)")
    evaluate.add_argument("--syncnet", help="SyncNet expert: a train-syncnet folder or a public syncnet_v2.model")
    evaluate.add_argument("--lpips-weights", help="folder with alexnet*.pth + alex.pth (else LPIPS is unavailable)")
    evaluate.add_argument("--device", help="torch device (default: cpu)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(handler=_cmd_evaluate)

    syncnet = sub.add_parser("train-syncnet", help="train the audio-visual sync expert on a prepared dataset")
    syncnet.add_argument("--data", required=True, help="prepared dataset")
    syncnet.add_argument("--run-dir", required=True, help="run folder")
    syncnet.add_argument("--preset", choices=["small", "syncnet_v2"], default="small", help="architecture")
    syncnet.add_argument("--config", help="YAML with SyncNetTrainConfig fields")
    syncnet.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. steps=600")
    syncnet.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    syncnet.add_argument("--no-progress", action="store_true")
    syncnet.set_defaults(handler=_cmd_train_syncnet)

    lipgan = sub.add_parser("train-lipgan", help="train the Wav2Lip-style GAN baseline on a prepared dataset")
    lipgan.add_argument("--data", required=True, help="prepared dataset")
    lipgan.add_argument("--run-dir", required=True, help="run folder")
    lipgan.add_argument("--syncnet", help="frozen sync expert for the sync loss (a train-syncnet folder)")
    lipgan.add_argument("--config", help="YAML with LipGANTrainConfig fields")
    lipgan.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. steps=2000")
    lipgan.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    lipgan.add_argument("--no-progress", action="store_true")
    lipgan.set_defaults(handler=_cmd_train_lipgan)

    verify = sub.add_parser("verify", help="check a video for the difftalk watermark and provenance metadata")
    verify.add_argument("file", help="video file (also after re-encoding)")
    verify.add_argument("--max-frames", type=int, default=250, help="frames to read at most (default: 250)")
    verify.set_defaults(handler=_cmd_verify)
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
