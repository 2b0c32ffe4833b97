"""``difftalk app``: the sub-command that serves the gradio web UI (:mod:`difftalk.app`).

Kept apart from :mod:`difftalk.cli` like the training commands; nothing here imports gradio or torch
at import time, so ``difftalk --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from difftalk.cli_options import add_command, positive_int, resolve_device

logger = logging.getLogger(__name__)


def _positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value:g}")
    return value


def _cmd_app(args: argparse.Namespace) -> int:
    from difftalk.app import import_gradio, launch_app
    from difftalk.app_limits import UploadLimits
    from difftalk.app_logic import AppConfig

    import_gradio()  # a missing extra is one line naming the pip command, before anything else
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio polls its own server at start-up
    if args.device:
        resolve_device(args.device)  # an unusable device is refused now, not at the first click
    config = AppConfig(
        checkpoint=args.checkpoint or "",
        device=args.device,
        limits=UploadLimits(max_megabytes=args.max_file_mb, max_seconds=args.max_seconds, max_side=args.max_side),
        output_dir=Path(args.output_dir),
    )
    logger.info("serving on http://%s:%d (Ctrl-C stops); videos go to %s", args.host, args.port, config.output_dir)
    launch_app(config, host=args.host, port=args.port, share=args.share)
    return 0


def add_app_command(sub: Any) -> argparse.ArgumentParser:
    """Add ``difftalk app`` to the sub-command parsers ``sub``."""
    app = add_command(
        sub,
        "app",
        "web UI: upload a video or photo and speech, generate, play, download; verify watermarks (difftalk[app])",
        _cmd_app,
    )
    app.add_argument(
        "--checkpoint",
        help="checkpoint pre-filled on the page: a folder or a Hugging Face Hub id owner/name[@revision] "
        "(default: the shipped one-step demo student; its teacher is src/difftalk/assets/demo_model)",
    )
    app.add_argument("--device", help="device pre-selected on the page: cpu, cuda, cuda:1, mps (default: auto)")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    app.add_argument("--port", type=positive_int, default=7860, help="port to listen on")
    app.add_argument("--share", action="store_true", help="also serve through a public gradio.live link (72 h)")
    app.add_argument("--max-file-mb", type=_positive_float, default=200.0, help="upload limit per file, in MB")
    app.add_argument(
        "--max-seconds", type=_positive_float, default=120.0, help="longest reference video or speech, in seconds"
    )
    app.add_argument("--max-side", type=positive_int, default=4096, help="longest side of a photo or video, in px")
    app.add_argument("--output-dir", default="outputs/app", help="folder for the generated videos")
    return app
