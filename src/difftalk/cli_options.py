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


DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16")
"""``--dtype`` values; ``auto`` = :func:`resolve_dtype`'s choice for the device."""

DTYPE_HELP = (
    "model precision; auto = bf16 on GPUs that support it (else fp16) and on CPUs with native bf16 "
    "(AVX512-BF16/AMX), else fp32"
)


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` (default ``auto``), read back by :func:`resolve_dtype`."""
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="auto", help=DTYPE_HELP)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag of Linux's
    ``/proc/cpuinfo``; ``cpuinfo`` replaces the file's text). Elsewhere, or unreadable: False."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(name: str, device: str) -> Any:
    """The ``torch.dtype`` of ``--dtype name`` on ``device`` (``auto``: see :data:`DTYPE_HELP`; MPS: fp32).

    On a CPU without native bf16, bf16 is emulated (slower than fp32) and fp16 is slower still: those are
    honoured when asked for, only ``auto`` avoids them."""
    import torch

    named = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name != "auto":
        if name not in named:
            raise ValueError(f"--dtype {name!r}: use one of {', '.join(DTYPE_NAMES)}")
        return named[name]
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
