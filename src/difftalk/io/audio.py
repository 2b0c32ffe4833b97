"""Audio files: load any common format as 16 kHz mono float32, and write WAV (stage ①).

WAV/FLAC/OGG are read with soundfile; everything else PyAV can demux (MP3, M4A/AAC, the audio track
of a video file) is decoded with PyAV. :func:`read_audio` keeps the file's own channels and sample
rate (what an output video carries); :func:`load_audio` averages them to mono and resamples with
soxr (through librosa) to the 16 kHz the models use. Errors name the file, the problem and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class AudioClip:
    """Audio as the file holds it: every channel, the file's own sample rate."""

    samples: np.ndarray
    """``(C, N)`` float32, nominally in [-1, 1]."""
    sample_rate: int
    """Samples per second of ``samples``."""

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    def mono(self, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """``(N',)`` float32: the channels averaged and resampled to ``sample_rate`` (soxr)."""
        audio = self.samples.mean(axis=0)
        if self.sample_rate != sample_rate:
            import librosa

            audio = librosa.resample(audio, orig_sr=self.sample_rate, target_sr=sample_rate, res_type="soxr_hq")
        return np.ascontiguousarray(audio, dtype=np.float32)

    def fit_seconds(self, seconds: float) -> AudioClip:
        """The clip trimmed or zero-padded to ``round(seconds * sample_rate)`` samples per channel."""
        return AudioClip(fit_length(self.samples, round(seconds * self.sample_rate)), self.sample_rate)


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    """``((C, N) float32, sample rate)`` of the first audio track of a media file."""
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
                planar = array.astype(np.float32)
                if array.dtype.kind in "iu":
                    planar /= float(2 ** (8 * array.dtype.itemsize - 1))
                if chunks and planar.shape[0] != chunks[0].shape[0]:
                    raise AudioError(f"{path}: the number of audio channels changes mid-stream; convert it first")
                chunks.append(planar)
                total += planar.shape[1]
                rate = frame.sample_rate or rate
                if rate and total > MAX_AUDIO_SECONDS * rate:
                    raise AudioError(f"{path} is longer than {MAX_AUDIO_SECONDS // 3600} h; split it first")
        except (av.error.InvalidDataError, av.error.FFmpegError) as exc:
            if not chunks:
                raise AudioError(f"{path}: the audio track cannot be decoded ({exc})") from None
            logger.warning("%s: audio decoding stopped early (%s); using the %d samples read", path, exc, total)
    if not chunks or rate <= 0:
        raise AudioError(f"{path} has an empty audio track")
    return np.concatenate(chunks, axis=1), rate


def read_audio(path: str | Path) -> AudioClip:
    """Read an audio file (or a video's audio track) with its own channels and sample rate.

    Returns:
        :class:`AudioClip` with ``(C, N)`` float32 samples, nominally in [-1, 1].

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
        audio = np.ascontiguousarray(data.T)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        audio, rate = _decode_with_pyav(path)
    if audio.size == 0:
        raise AudioError(f"{path} contains no audio samples")
    if audio.shape[1] > MAX_AUDIO_SECONDS * rate:
        raise AudioError(f"{path} is longer than {MAX_AUDIO_SECONDS // 3600} h; split it first")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path} contains NaN or infinite samples")
    return AudioClip(audio.astype(np.float32, copy=False), int(rate))


def audio_duration(path: str | Path) -> float:
    """Seconds of audio in a file (or a video's audio track), from its header without decoding the samples:
    soundfile for WAV/FLAC/OGG, else the container's duration (PyAV); decoded only when neither says.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is empty, corrupt or has no audio track.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    if path.stat().st_size == 0:
        raise AudioError(f"{path} is empty (0 bytes)")
    try:
        info = sf.info(str(path))
        return float(info.frames) / float(info.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not a format libsndfile reads: ask the container
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(f"{path} is not a readable media file ({exc}); use WAV, FLAC, MP3, M4A or MP4") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio track; pass a file with speech in it")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
    clip = read_audio(path)
    return clip.num_samples / clip.sample_rate


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load an audio file (or a video's audio track) as mono float32 at ``sample_rate``.

    Returns:
        ``(N,)`` float32, nominally in [-1, 1].

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the file is empty, corrupt, has no audio track or is too long.
    """
    return read_audio(path).mono(sample_rate)


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad ``audio`` (``(N,)`` or ``(C, N)``) to exactly ``num_samples`` along its last axis."""
    length = audio.shape[-1]
    if length >= num_samples:
        return audio[..., :num_samples]
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, num_samples - length)])
