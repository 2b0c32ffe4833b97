"""Per-frame audio feature windows (stage ②): ``(N, 16, F)`` for a clip of N video frames.

Every backend yields features at 50 steps per second (2 per video frame at 25 fps). Video frame i
gets the 16 steps centred on its time ``i / fps`` (320 ms, as AD-NeRF/DiffTalk). The audio is padded
with silence so windows at the ends see silence, not wrapped or missing audio.

Backends: ``mel`` (log-mel, librosa, no weights; the default), ``whisper`` (Whisper encoder states,
see ``whisper_features``), ``precomputed`` (AD-NeRF/DeepSpeech ``(N, 16, 29)`` arrays from the user).
"""

from __future__ import annotations

import functools

import numpy as np

from difftalk.constants import FPS, FeatureBackend
from difftalk.io.audio import SAMPLE_RATE

STEPS_PER_SECOND = 50
WINDOW = 16
HOP = SAMPLE_RATE // STEPS_PER_SECOND  # 320 samples = 20 ms
MEL_BANDS = 80
FEATURE_DIMS = {"mel": MEL_BANDS, "whisper": 384, "precomputed": 29}


def mel_steps(audio: np.ndarray) -> np.ndarray:
    """Log-mel features at 50 Hz: ``(T_steps, 80)`` float32; step j is centred at ``j * 20 ms``.

    n_fft 1024, window 640 (40 ms), 55-7600 Hz; ``(ln(mel + 1e-5) + 5) / 4`` puts speech roughly in [-2, 2].
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(audio, dtype=np.float32),
        sr=SAMPLE_RATE,
        n_fft=1024,
        win_length=640,
        hop_length=HOP,
        n_mels=MEL_BANDS,
        fmin=55.0,
        fmax=7600.0,
        center=True,
        power=2.0,
    )
    return ((np.log(mel + 1e-5) + 5.0) / 4.0).T.astype(np.float32)


def frame_windows(steps: np.ndarray, num_frames: int, fps: float = FPS, window: int = WINDOW) -> np.ndarray:
    """Cut 50 Hz step features ``(T_steps, F)`` into per-frame windows ``(num_frames, window, F)``.

    Frame i's window is centred on step ``round(i * 50 / fps)``: steps ``c - window/2 … c + window/2 - 1``.
    Steps past either end repeat the edge step (callers pad the audio with silence first).
    """
    if steps.ndim != 2 or steps.shape[0] == 0:
        raise ValueError(f"expected (T_steps, F) features, got {steps.shape}")
    centres = np.round(np.arange(num_frames) * STEPS_PER_SECOND / fps).astype(np.int64)
    offsets = np.arange(window) - window // 2
    index = np.clip(centres[:, None] + offsets[None, :], 0, steps.shape[0] - 1)
    return steps[index]


def compute_features(
    audio: np.ndarray, num_frames: int, backend: FeatureBackend = "mel", fps: float = FPS
) -> np.ndarray:
    """Per-frame feature windows ``(num_frames, 16, F)`` float16 for 16 kHz mono ``audio``.

    Raises:
        ValueError: for an unknown backend or ``precomputed`` (those arrays come from the user).
    """
    pad = WINDOW // 2 * HOP + HOP
    padded = np.pad(np.asarray(audio, dtype=np.float32), (pad, pad))
    if backend == "mel":
        steps = mel_steps(padded)
    elif backend == "whisper":
        from difftalk.preprocess.whisper_features import whisper_steps

        steps = whisper_steps(padded)
    elif backend == "precomputed":
        raise ValueError("precomputed features are read from the user's .npy files, not computed")
    else:
        raise ValueError(f"unknown audio feature backend {backend!r}; use mel, whisper or precomputed")
    # Drop the padding again: step (pad / HOP) is time 0 of the original audio.
    first = pad // HOP
    return frame_windows(steps[first:], num_frames, fps).astype(np.float16)


def silent_frames(
    audio: np.ndarray, num_frames: int, threshold_db: float, fps: float = FPS, hold: int = 0
) -> np.ndarray:
    """``(num_frames,)`` bool: the RMS of the audio within ±20 ms of the frame's time is below ``threshold_db``
    — and, with ``hold`` > 0, so is every frame within ±``hold`` frames (beyond the ends counts as silent), so
    a short gap inside speech, or the frames whose feature window already hears the next word, are not silent."""
    half = int(0.02 * SAMPLE_RATE)
    centres = (np.arange(num_frames) / fps * SAMPLE_RATE).astype(np.int64)
    padded = np.pad(audio.astype(np.float64), (half, half))
    energy = np.concatenate([[0.0], np.cumsum(padded**2)])
    rms = np.sqrt((energy[centres + 2 * half] - energy[centres]) / (2 * half))
    quiet = 20 * np.log10(rms + 1e-12) < threshold_db
    if hold > 0:
        around = np.lib.stride_tricks.sliding_window_view(np.pad(quiet, hold, constant_values=True), 2 * hold + 1)
        quiet = around.all(axis=1)
    return quiet


@functools.cache
def silence_window(backend: FeatureBackend = "mel") -> np.ndarray:
    """``(16, F)`` float16, read-only: the feature window of digital silence (what a silent frame is given).
    Computed once per backend (streaming asks for it every chunk; Whisper's costs an encoder pass)."""
    window = compute_features(np.zeros(SAMPLE_RATE, np.float32), 1, backend=backend)[0]
    window.setflags(write=False)
    return window


def replace_silent_frames(
    features: np.ndarray,
    audio: np.ndarray,
    threshold_db: float,
    backend: FeatureBackend = "mel",
    fps: float = FPS,
    hold: int = 0,
) -> np.ndarray:
    """The silence rule, one implementation for inference and training: frames of ``features``
    ``(N, 16, F)`` whose ``audio`` (16 kHz mono, frame 0 at sample 0) is below ``threshold_db``
    (:func:`silent_frames`) get :func:`silence_window` instead. Changes ``features`` in place and returns it."""
    silent = silent_frames(audio, features.shape[0], threshold_db, fps, hold)
    if silent.any():
        features[silent] = silence_window(backend)
    return features


def load_precomputed(path: str, num_frames: int) -> np.ndarray:
    """Read a user's AD-NeRF/DeepSpeech ``(N, 16, 29)`` array and match it to ``num_frames``.

    Raises:
        ValueError: the array does not have shape ``(N, 16, 29)`` or N differs from the clip by > 2 frames.
    """
    array = np.load(path)
    if array.ndim != 3 or array.shape[1:] != (WINDOW, FEATURE_DIMS["precomputed"]):
        raise ValueError(f"{path}: precomputed features must have shape (N, 16, 29), got {array.shape}")
    if abs(array.shape[0] - num_frames) > 2:
        raise ValueError(f"{path}: {array.shape[0]} feature frames for a clip of {num_frames} video frames")
    index = np.clip(np.arange(num_frames), 0, array.shape[0] - 1)
    return array[index].astype(np.float16)
