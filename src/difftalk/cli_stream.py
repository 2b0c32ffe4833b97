"""``difftalk stream``: dub a video or photo with speech as it is spoken (:meth:`TalkingHeadPipeline.stream`).

The audio is a file read block by block or raw 16 kHz mono 16-bit PCM on stdin (``--audio -``); the
frames go into an MP4 (with the streamed audio, watermark and provenance tags) or, with ``-o -``, as
raw RGB24 frames to stdout for a player or an encoder (``ffplay -f rawvideo -pixel_format rgb24
-video_size WxH -framerate 25 -``; the size is logged at the start). Kept apart from
:mod:`difftalk.cli`; nothing here imports torch at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from difftalk.cli_generate import add_guidance_argument
from difftalk.cli_options import (
    NOISE_HELP,
    add_command,
    add_dtype_argument,
    positive_int,
    resolve_device,
    resolve_dtype,
)

logger = logging.getLogger(__name__)


def _cmd_stream(args: argparse.Namespace) -> int:
    from difftalk.demo import DEMO_STUDENT
    from difftalk.pipeline import DiffTalkPipeline, GenerateOptions
    from difftalk.pipeline.streaming import read_chunks

    to_stdout = args.output == "-"
    options = GenerateOptions(
        num_steps=args.steps,
        sampler=args.sampler,
        audio_guidance=args.audio_guidance,
        lanes=args.lanes,
        noise=args.noise,
        progressive_reference=not args.no_progressive_reference,
        seed=args.seed,
        progress=not args.no_progress and not to_stdout,
    )
    device = resolve_device(args.device, "auto")
    pipe = DiffTalkPipeline.from_pretrained(
        args.checkpoint or DEMO_STUDENT, device=device, dtype=resolve_dtype(args.dtype, device)
    )
    pipe.check_steps(args.steps, args.sampler)
    pipe.set_source(args.source, options)
    chunks = read_chunks(args.audio, seconds=args.chunk_seconds)
    if not to_stdout:
        result = pipe.stream_to_file(chunks, args.output, options)
        logger.info("wrote %s (%d frames; first frame after %.2f s)", result.output, result.num_frames,
                    result.first_frame_seconds)  # fmt: skip
        return 0
    out = sys.stdout.buffer
    for item in pipe.stream(chunks, options):
        if item.index == 0:
            height, width = item.image.shape[:2]
            logger.info("raw rgb24 frames of %dx%d at 25 fps on stdout", width, height)
        out.write(item.image.tobytes())
        out.flush()
    return 0


def add_stream_command(sub: Any) -> argparse.ArgumentParser:
    """Add ``difftalk stream`` to the sub-command parsers ``sub``."""
    from difftalk.diffusion import SAMPLERS

    stream = add_command(
        sub,
        "stream",
        "live dubbing: speech read as it arrives (a file or 16 kHz PCM on stdin), frames out as they are made",
        _cmd_stream,
    )
    stream.add_argument(
        "--source", "--reference", dest="source", required=True, help="the video to dub or the photo to animate"
    )
    stream.add_argument("--audio", required=True, help="speech file (read block by block) or - for s16le 16 kHz mono")
    stream.add_argument("-o", "--output", required=True, help="output .mp4, or - for raw rgb24 frames on stdout")
    stream.add_argument(
        "--checkpoint",
        help="model folder or hub repo id (default: the shipped one-step student, as good as the demo model on the "
        "held-out benchmark at a tenth of its UNet work)",
    )
    stream.add_argument("--steps", type=positive_int, help="sampling steps (default: the checkpoint's)")
    stream.add_argument("--sampler", choices=SAMPLERS, help="update rule (default: the checkpoint's)")
    add_guidance_argument(stream)
    stream.add_argument("--lanes", type=positive_int, default=1, help="frames per batch (1 = lowest latency)")
    stream.add_argument("--noise", choices=["independent", "shared"], default="shared", help=NOISE_HELP)
    stream.add_argument("--no-progressive-reference", action="store_true", help="always use the fixed reference")
    stream.add_argument("--chunk-seconds", type=float, default=0.2, help="audio read per block")
    stream.add_argument("--seed", type=int, default=0, help="noise seed")
    stream.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_dtype_argument(stream)
    stream.add_argument("--no-progress", action="store_true", help="no progress bar (always off with -o -)")
    return stream
