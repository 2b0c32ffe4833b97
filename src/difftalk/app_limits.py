"""Upload limits of ``difftalk app``: pure checks, without gradio or torch.

Every upload is checked *before* a model is loaded or a frame is generated: its file size, its
duration (videos and speech) and its resolution (photos and videos, the longer side), read from the
file's header with the project's readers (:mod:`difftalk.io`). Speech is also decoded once to refuse
silent recordings. A broken limit or an unreadable file raises :class:`UploadError`, a ``ValueError``
whose one-line message names the file, the limit, the value found and what to do; the app shows it
as it is (``gradio.Error``), the command line would log it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from difftalk.io.audio import AudioError, audio_duration, read_audio
from difftalk.io.image import image_size
from difftalk.io.video import IMAGE_SUFFIXES, VideoError, is_image_file, probe_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
"""Reference videos the upload field offers (anything else PyAV reads is accepted too)."""
SOURCE_SUFFIXES = (*VIDEO_SUFFIXES, *sorted(IMAGE_SUFFIXES))
SPEECH_SUFFIXES = (".wav", ".mp3", ".m4a", ".flac", ".ogg")
SILENCE_DBFS = -60.0
"""Speech whose peak level is below this (dB full scale) is refused as silent."""


class UploadError(ValueError):
    """An upload breaks a limit or cannot be read; the message says which, the value found and the fix."""


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be; the defaults suit a CPU server."""

    max_megabytes: float = 200.0
    """File size of each upload, in MB (10⁶ bytes)."""
    max_seconds: float = 120.0
    """Duration of a source video and of the speech, in seconds."""
    max_side: int = 4096
    """Longer side of a photo or of a video's frames, in pixels."""

    def __post_init__(self) -> None:
        if not (self.max_megabytes > 0 and self.max_seconds > 0 and self.max_side > 0):
            raise ValueError(f"upload limits must be positive, got {self}")

    def describe(self) -> str:
        """One line for the page, e.g. ``200 MB per file, 120 s of video or speech, 4096 px on the longer side``."""
        return (
            f"{self.max_megabytes:g} MB per file, {self.max_seconds:g} s of video or speech, "
            f"{self.max_side} px on the longer side"
        )


@dataclass(frozen=True)
class MediaSummary:
    """What the checks learned about an upload that passed them."""

    kind: str
    """``photo``, ``video`` or ``speech``."""
    name: str
    """The file name (without the server's upload folder)."""
    megabytes: float
    seconds: float | None = None
    """Duration (videos and speech)."""
    size: tuple[int, int] | None = None
    """(width, height) in pixels (photos and videos)."""

    def describe(self) -> str:
        """One line, e.g. ``video face.mp4: 640×480 px, 1.6 s, 0.3 MB``."""
        parts = [] if self.size is None else [f"{self.size[0]}×{self.size[1]} px"]
        parts += [] if self.seconds is None else [f"{self.seconds:.1f} s"]
        return f"{self.kind} {self.name}: {', '.join([*parts, f'{self.megabytes:.1f} MB'])}"


def _reason(exc: Exception, path: Path) -> str:
    """The reader's message without the server's upload folder (only the file name stays)."""
    return str(exc).replace(str(path), path.name)


def check_file_size(path: str | Path, limits: UploadLimits, what: str) -> float:
    """The size of ``path`` in MB after checking that it exists, is not empty and is within the limit.

    Raises:
        UploadError: missing, empty, or larger than ``limits.max_megabytes``.
    """
    path = Path(path)
    if not path.is_file():
        raise UploadError(f"the {what} {path.name!r} was not received; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"the {what} {path.name!r} is empty (0 bytes); upload the file again or pick another one")
    megabytes = size / 1e6
    if megabytes > limits.max_megabytes:
        raise UploadError(
            f"the {what} {path.name!r} is {megabytes:.1f} MB; the upload limit is {limits.max_megabytes:g} MB per "
            f"file. Shorten or compress it, or start the app with a higher --max-file-mb"
        )
    return megabytes


def _check_side(width: int, height: int, limits: UploadLimits, what: str, name: str) -> None:
    if max(width, height) > limits.max_side:
        raise UploadError(
            f"the {what} {name!r} is {width}×{height} px; the limit is {limits.max_side} px on the longer side. "
            f"Downscale it (faces need no more than ~1080 px), or start the app with a higher --max-side"
        )


def _check_seconds(seconds: float, limits: UploadLimits, what: str, name: str) -> None:
    if not math.isfinite(seconds) or seconds <= 0:
        raise UploadError(f"the {what} {name!r} has no duration (empty or broken); upload another file")
    if seconds > limits.max_seconds:
        raise UploadError(
            f"the {what} {name!r} is {seconds:.1f} s long; the limit is {limits.max_seconds:g} s. "
            f"Trim it to at most {limits.max_seconds:g} s, or start the app with a higher --max-seconds"
        )


def check_source(path: str | Path, limits: UploadLimits) -> MediaSummary:
    """Check a source upload: a photo (by suffix) or a video (anything PyAV reads).

    Raises:
        UploadError: too large, too long, too many pixels, or not a readable photo/video.
    """
    path = Path(path)
    megabytes = check_file_size(path, limits, "source")
    if is_image_file(path):
        try:
            width, height = image_size(path)
        except ValueError as exc:
            raise UploadError(f"the photo {path.name!r} cannot be read: {_reason(exc, path)}") from None
        _check_side(width, height, limits, "photo", path.name)
        return MediaSummary("photo", path.name, megabytes, size=(width, height))
    try:
        info = probe_video(path)
    except VideoError as exc:
        raise UploadError(
            f"the source {path.name!r} cannot be read as a video or photo: {_reason(exc, path)}"
        ) from None
    _check_side(info.width, info.height, limits, "video", path.name)
    _check_seconds(info.duration, limits, "video", path.name)
    return MediaSummary("video", path.name, megabytes, info.duration, (info.width, info.height))


def check_speech(path: str | Path, limits: UploadLimits, silence_dbfs: float = SILENCE_DBFS) -> MediaSummary:
    """Check a speech upload: size and duration from the header first, then the decoded level.

    Raises:
        UploadError: too large, too long, unreadable, without audio, or silent (peak below ``silence_dbfs``).
    """
    path = Path(path)
    megabytes = check_file_size(path, limits, "speech file")
    try:
        seconds = audio_duration(path)
        _check_seconds(seconds, limits, "speech file", path.name)
        clip = read_audio(path)  # bounded now: at most max_seconds of audio
    except AudioError as exc:
        raise UploadError(f"the speech file {path.name!r} cannot be used: {_reason(exc, path)}") from None
    peak = float(np.abs(clip.samples).max()) if clip.samples.size else 0.0
    level = 20 * math.log10(peak) if peak > 0 else -math.inf
    if level < silence_dbfs:
        raise UploadError(
            f"the speech file {path.name!r} is silent (peak level {level:.0f} dBFS, below {silence_dbfs:g} dBFS); "
            f"upload a recording with speech in it"
        )
    return MediaSummary("speech", path.name, megabytes, clip.num_samples / clip.sample_rate)


def check_upload(path: str | Path, limits: UploadLimits, kind: str) -> MediaSummary:
    """:func:`check_source` (``kind="source"``), :func:`check_speech` (``"speech"``) or, for a file to
    verify (``"verify"``), only the size.

    Raises:
        UploadError: see the checks; ValueError: an unknown ``kind``.
    """
    if kind == "source":
        return check_source(path, limits)
    if kind == "speech":
        return check_speech(path, limits)
    if kind == "verify":
        return MediaSummary("video", Path(path).name, check_file_size(path, limits, "video"))
    raise ValueError(f"unknown upload kind {kind!r}; use source, speech or verify")
