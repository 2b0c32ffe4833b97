"""Options and checks shared by several ``difftalk`` sub-commands (see :mod:`difftalk.cli`).

The help formatter (every flag shows its default) and the sub-command factory, argument types, and
the ``--device`` check used by every command that takes one. Nothing here imports torch at import time.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

NOISE_HELP = "initial DDIM noise: a new draw per frame, or one draw for the whole video (less flicker)"

Handler = Callable[[argparse.Namespace], int]
"""A sub-command: parsed arguments → exit status."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` after each flag's help, except for flags without a default (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def add_command(
    sub: Any, name: str, help_text: str, handler: Handler, description: str | None = None
) -> argparse.ArgumentParser:
    """A sub-command parser whose help shows every flag's default."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=HelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


class DeviceError(ValueError):
    """``--device`` names a device this machine or this torch build cannot use."""


def resolve_device(name: str | None, default: str = "cpu") -> str:
    """The torch device a command runs on: ``name`` after checking that it can be used, else ``default``.

    Args:
        name: the ``--device`` value (``cpu``, ``cuda``, ``cuda:1``, ``mps``), or None.
        default: used when ``name`` is None; ``auto`` = ``cuda`` if a GPU is usable, else ``cpu``.

    Raises:
        DeviceError: the device does not exist here (one line naming the problem and the fix).
    """
    import torch

    if not name:
        if default == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        name = default
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r} is not a device name; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = (
                f"this torch build ({torch.__version__}) has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (check the driver, nvidia-smi and CUDA_VISIBLE_DEVICES)"
            )
            raise DeviceError(
                f"--device {name}: {reason}; run with --device cpu, or install a CUDA build of torch into this "
                "environment (https://pytorch.org/get-started/locally/)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: only {count} CUDA GPU(s) are visible; use cuda:0 … cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            reason = (
                "it needs a Mac with Apple silicon and macOS 12.3 or newer"
                if torch.backends.mps.is_built()
                else f"this torch build ({torch.__version__}) has no MPS support"
            )
            raise DeviceError(
                f"--device {name}: MPS (the GPU of Macs with Apple silicon) is not available here, {reason}; "
                "run with --device cpu"
            )
    elif device.type != "cpu":
        raise DeviceError(f"--device {name}: difftalk runs on cpu, cuda or mps; use one of those")
    return name
