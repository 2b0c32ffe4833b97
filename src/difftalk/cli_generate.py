"""``difftalk generate`` and ``difftalk benchmark``: the commands that sample a model, and their shared flags.

Vocabulary (as in :mod:`difftalk.pipeline.base`): ``--source`` is the video to dub or the photo to animate;
the *reference* is the identity frame of that source (``--reference-frame``, ``--no-progressive-reference``).
``--reference`` is still accepted for ``--source``, its name in earlier versions. Kept apart from
:mod:`difftalk.cli`; nothing here imports torch at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from difftalk.cli_options import (
    NOISE_HELP,
    add_command,
    add_dtype_argument,
    positive_int,
    resolve_device,
    resolve_dtype,
)
from difftalk.constants import SILENCE_DB, SILENCE_HOLD_FRAMES
from difftalk.diffusion import SAMPLERS

logger = logging.getLogger("difftalk")


def generation_options(args: argparse.Namespace, **fields: Any) -> Any:
    """The :class:`~difftalk.pipeline.options.GenerateOptions` of the flags :func:`add_generation_arguments` adds,
    plus the command's own ``fields``."""
    from difftalk.pipeline.options import GenerateOptions

    return GenerateOptions(
        num_steps=args.steps,
        sampler=args.sampler,
        audio_guidance=args.audio_guidance,
        progressive_reference=not args.no_progressive_reference,
        reference_update=args.reference_update,
        colour_fix=not args.no_colour_fix,
        decode_window=not args.full_decode,
        lanes=args.lanes,
        temporal_smoothing=args.temporal_smoothing,
        noise=args.noise,
        seed=args.seed,
        silence_db=args.silence_db,
        silence_hold=args.silence_hold,
        **fields,
    )


def _cmd_generate(args: argparse.Namespace) -> int:
    from difftalk.pipeline import DiffTalkPipeline
    from difftalk.pipeline.batch import jobs_for_audios, load_jobs, run_jobs, summarize, write_summary

    if args.jobs and (args.source or args.audio):
        raise ValueError("--jobs FILE lists the sources and audio itself: leave out --source and --audio")
    if not args.jobs and not (args.source and args.audio and args.output):
        raise ValueError("generate needs --source, --audio and -o (or --jobs FILE with one job per row)")
    device = resolve_device(args.device, default="auto")
    # Everything is checked (inputs exist, options valid, outputs distinct) before the model loads.
    jobs = load_jobs(args.jobs, args.output) if args.jobs else jobs_for_audios(args.source, args.audio, args.output)
    dtype = resolve_dtype(args.dtype, device)
    options = generation_options(
        args,
        reference_frame=args.reference_frame,
        length=args.length,
        loop=args.loop,
        landmarks=args.landmarks,
        detector=args.detector,
        watermark=True,
        progress=not args.no_progress,
    )
    pipe = DiffTalkPipeline.from_pretrained(args.checkpoint, device=device, dtype=dtype)
    pipe.check_steps(args.steps, args.sampler)
    if args.fast:
        pipe.optimize(channels_last=True, compile_unet=device.startswith("cuda"))
    if len(jobs) == 1 and not args.jobs:
        # One video: its errors are the command's errors (one line, exit 2).
        pipe.set_source(jobs[0].source, options)
        result = pipe.generate(jobs[0].audio, jobs[0].output, options)
        logger.info(
            "wrote %s (%d frames, %.2f s, %.1f frames/s)",
            result.output,
            result.num_frames,
            result.duration,
            result.frames_per_second,
        )
        return 0
    results = run_jobs(pipe, jobs, options, skip_existing=args.skip_existing)
    sys.stdout.write(summarize(results) + "\n")
    if args.summary:
        logger.info("wrote %s", write_summary(results, args.summary))
    return 1 if any(r.status == "failed" for r in results) else 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from difftalk.eval.benchmark import run_benchmark

    device = resolve_device(args.device, default="cpu")
    # (too few --steps: the pipeline warns once, when the first clip starts)
    path = run_benchmark(
        args.data,
        args.out_dir,
        checkpoint=args.checkpoint,
        method=args.method,
        split=args.split,
        seconds=args.seconds,
        cross_audio=args.cross_audio,
        options=generation_options(args),
        device=device,
        dtype=resolve_dtype(args.dtype, device),
        max_clips=args.max_clips,
    )
    logger.info("wrote %s; next: difftalk evaluate %s --data %s", path, args.out_dir, args.data)
    return 0


def add_guidance_argument(parser: argparse.ArgumentParser) -> None:
    """``--audio-guidance S`` (``GenerateOptions.audio_guidance``)."""
    parser.add_argument(
        "--audio-guidance",
        type=float,
        default=None,
        metavar="S",
        help="classifier-free guidance on the audio (> 1: stronger lip movement, twice the UNet work; needs a "
        "model trained with train.audio_dropout; default: the checkpoint's, 1 = off)",
    )


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampling flags ``generate`` and ``benchmark`` share (read back by :func:`generation_options`)."""
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="sampling steps (default: the checkpoint's; fewer than it recommends is warned about)",
    )
    parser.add_argument("--sampler", choices=SAMPLERS, help="update rule (default: the checkpoint's, ddim)")
    parser.add_argument(
        "--no-progressive-reference",
        action="store_true",
        help="always use the fixed reference frame instead of the previous generated frame",
    )
    parser.add_argument(
        "--reference-update",
        choices=["composite", "latent"],
        default="composite",
        help="what a frame passes on as the next reference: the real crop with the generated mouth pasted in "
        "(encoded), or the generated latent itself",
    )
    parser.add_argument(
        "--no-colour-fix", action="store_true", help="keep the autoencoder's colour cast in the generated mouth"
    )
    parser.add_argument(
        "--full-decode",
        action="store_true",
        help="decode the whole face crop every frame, not only the latent window that is pasted back (slower)",
    )
    parser.add_argument(
        "--lanes", type=positive_int, default=1, help="parallel progressive chunks (faster on GPUs, 1 = sequential)"
    )
    parser.add_argument(
        "--temporal-smoothing", type=float, default=0.2, help="frame interpolation weight against jitter (0-0.5)"
    )
    parser.add_argument("--noise", choices=["independent", "shared"], default="independent", help=NOISE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sampling noise")
    add_guidance_argument(parser)
    parser.add_argument(
        "--silence-db",
        type=float,
        default=SILENCE_DB,
        help="frames whose audio is below this level (dB) get digital silence's features, a closed mouth; raise it "
        "for a noisy recording, --silence-db=-inf turns it off (default: %(default)s)",
    )
    parser.add_argument(
        "--silence-hold",
        type=int,
        default=SILENCE_HOLD_FRAMES,
        help="a frame counts as silent only if the frames within ±N are too (0-8; default: %(default)s)",
    )


def add_generation_commands(sub: Any) -> None:
    """Add ``difftalk generate`` and ``difftalk benchmark`` to the sub-command parsers ``sub``."""
    gen = add_command(sub, "generate", "lip-sync a video (dubbing) or animate a photo with speech", _cmd_generate)
    gen.add_argument(
        "--source",
        "--reference",
        dest="source",
        help="the video to dub or the photo to animate (--reference: its name in earlier versions)",
    )
    gen.add_argument(
        "--audio",
        action="append",
        help="speech: any length, rate, channels; WAV, FLAC, MP3, M4A, MP4 (kept as it is in the output); "
        "repeat for several videos of one source (then -o is a folder)",
    )
    gen.add_argument(
        "--jobs",
        help="a CSV or YAML job list instead of --source/--audio: one video per row (source, audio, "
        "output and any generation option, e.g. steps, seed, noise); the model loads once, a failing job is "
        "reported and the rest go on",
    )
    gen.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder (e.g. runs/NAME/checkpoints/model) or Hugging Face Hub repo id owner/name[@revision]",
    )
    gen.add_argument(
        "-o",
        "--output",
        help="output .mp4; a folder (existing, or ending in /) gets <source>_<audio>.mp4, no extension gets "
        ".mp4; with --jobs: the folder for rows without an output",
    )
    gen.add_argument(
        "--skip-existing", action="store_true", help="skip jobs whose output exists (resume an interrupted batch)"
    )
    gen.add_argument("--summary", help="also write the batch's per-job outcome to this JSON file")
    add_generation_arguments(gen)
    gen.add_argument(
        "--reference-frame", type=int, default=0, help="index of the source frame used as the identity reference"
    )
    gen.add_argument("--length", choices=["audio", "video"], default="audio", help="the output length follows")
    gen.add_argument("--loop", choices=["pingpong", "loop"], default="pingpong", help="how a short video is extended")
    gen.add_argument(
        "--landmarks",
        choices=["auto", "detector", "ground_truth"],
        default="auto",
        help="face landmarks: the synthetic benchmark's ground truth when present, else dlib (difftalk[face])",
    )
    gen.add_argument(
        "--detector",
        choices=["hog", "cnn"],
        default="hog",
        help="dlib face detector for the source; use the one the training clips were preprocessed with",
    )
    gen.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available, else cpu)")
    add_dtype_argument(gen)
    gen.add_argument("--fast", action="store_true", help="channels-last + torch.compile of the UNet (GPU)")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    bench = add_command(sub, "benchmark", "generate a results folder for held-out clips (for evaluate)", _cmd_benchmark)
    bench.add_argument("out_dir", help="results folder")
    bench.add_argument("--data", required=True, help="prepared dataset (its source videos must exist)")
    bench.add_argument("--checkpoint", help="model folder or hub repo id (methods difftalk, lipgan)")
    bench.add_argument(
        "--method",
        choices=["difftalk", "lipgan", "source", "static"],
        default="difftalk",
        help="the model, the GAN baseline, the unchanged video, or the reference mouth pasted into every frame",
    )
    bench.add_argument("--split", default="test", help="clips to use (train, test or all)")
    bench.add_argument("--seconds", type=float, default=4.0, help="seconds per clip")
    bench.add_argument("--cross-audio", action="store_true", help="drive each clip with another clip's audio")
    bench.add_argument("--max-clips", type=positive_int, help="only the first clips (default: all)")
    add_generation_arguments(bench)
    bench.add_argument("--device", help="torch device: cpu, cuda, cuda:1, mps (default: cpu)")
    add_dtype_argument(bench)
