"""Audio files: load any common format as 16 kHz mono float32, and write WAV (stage ①).

WAV/FLAC/OGG are read with soundfile; everything else PyAV can demux (MP3, M4A/AAC, the audio track
of a video file) is decoded with PyAV. Multi-channel audio is averaged to mono and resampled with
soxr (through librosa). Errors name the file, the problem and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""The sample rate used everywhere inside difftalk."""

MAX_AUDIO_SECONDS = 4 * 60 * 60
"""Refuse inputs longer than this (bounded untrusted input)."""


class AudioError(ValueError):
    """An audio input cannot be used."""


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, OSError) as exc:
        raise AudioError(f"{path} is not a readable media file ({exc}); use WAV, FLAC, MP3, M4A or MP4") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio track; pass a file with speech in it")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                array = frame.to_ndarray()
                if array.ndim == 1:
                    array = array[None]
                if frame.format.is_packed:
                    array = array.reshape(-1, len(frame.layout.channels)).T
                mono = array.astype(np.float32).mean(axis=0)
                if array.dtype.kind in "iu":
                    mono /= float(2 ** (8 * array.dtype.itemsize - 1))
                chunks.append(mono)
                total += mono.size
                rate = frame.sample_rate or rate
                if rate and total > MAX_AUDIO_SECONDS * rate:
                    raise AudioError(f"{path} is longer than {MAX_AUDIO_SECONDS // 3600} h; split it first")
        except (av.error.InvalidDataError, av.error.FFmpegError) as exc:
            if not chunks:
                raise AudioError(f"{path}: the audio track cannot be decoded ({exc})") from None
            logger.warning("%s: audio decoding stopped early (%s); using the %d samples read", path, exc, total)
    if not chunks or rate <= 0:
        raise AudioError(f"{path} has an empty audio track")
    return np.concatenate(chunks), rate


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load an audio file (or a video's audio track) as mono float32 at ``sample_rate``.

    Returns:
        ``(N,)`` float32, nominally in [-1, 1].

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is empty, corrupt, has no audio track or is too long.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    if path.stat().st_size == 0:
        raise AudioError(f"{path} is empty (0 bytes)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = data.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        audio, rate = _decode_with_pyav(path)
    if audio.size == 0:
        raise AudioError(f"{path} contains no audio samples")
    if audio.size > MAX_AUDIO_SECONDS * rate:
        raise AudioError(f"{path} is longer than {MAX_AUDIO_SECONDS // 3600} h; split it first")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path} contains NaN or infinite samples")
    if rate != sample_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad ``audio`` to exactly ``num_samples``."""
    if audio.size >= num_samples:
        return audio[:num_samples]
    return np.pad(audio, (0, num_samples - audio.size))
