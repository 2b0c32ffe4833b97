"""Lip-sync metrics with a SyncNet expert: MFCC front end, offset search, LSE-D / LSE-C, AV offset.

Stage ⑦. Follows syncnet_python's ``SyncNetInstance.evaluate`` (the protocol behind the LSE numbers
of Wav2Lip, DiffTalk and most talking-head papers):

* audio → MFCC exactly as python_speech_features' ``mfcc`` defaults (25 ms rectangular windows every
  10 ms, pre-emphasis 0.97, 512-point FFT, 26 mel filters 0–8 kHz, 13 DCT-II coefficients, lifter 22,
  c0 replaced by the log frame energy), computed on int16-scaled samples like its ``wavfile`` input;
* window ``i`` = video frames ``i … i+4`` and MFCC steps ``4i … 4i+19`` (0.2 s); there are
  ``min(num_frames, ⌊samples / 640⌋) − 5`` windows, as in the reference;
* for each candidate offset ``k ∈ [−V, V]`` (V = ``vshift`` = 15): ``D(k) = mean_i ‖v_i − a_{i+k} + 1e-6‖₂``,
  with audio embeddings outside the clip taken as zero vectors (the reference pads with zeros);
* **LSE-D** = ``min_k D(k)`` (lower is better), **LSE-C** = ``median_k D(k) − min_k D(k)`` (higher is
  better), **AV offset** = ``−argmin_k D(k)`` in frames (syncnet_python's sign: audio that lags the
  video by d frames gives offset −d).

LSE-D / LSE-C take the best offset, so they barely change when the audio is merely shifted by a few
frames (the offset reveals that); ``lse_d_at_0 = D(0)`` and ``lse_c_at_0 = median_k D(k) − D(0)`` score
the nominal alignment and do degrade with a shift.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.fft import dct

from difftalk.constants import FPS
from difftalk.io.audio import SAMPLE_RATE
from difftalk.models.syncnet import MFCC_STEPS_PER_FRAME, SyncNet, SyncNetConfig

logger = logging.getLogger(__name__)

VSHIFT = 15
"""Default offset search range ±frames (syncnet_python ``--vshift``)."""
INT16_SCALE = 32768.0
"""syncnet_python reads 16-bit WAV samples unscaled; float audio in [-1, 1] is scaled by this."""
_EPS = float(np.finfo(float).eps)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(num_filters: int = 26, nfft: int = 512, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters ``(num_filters, nfft // 2 + 1)`` on FFT bins, 0 Hz to Nyquist.

    Bin edges are ``⌊(nfft + 1) · f / sample_rate⌋`` of ``num_filters + 2`` points evenly spaced in mel
    (``2595 log10(1 + f / 700)``), as python_speech_features' ``get_filterbanks``.
    """
    points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(points) / sample_rate).astype(np.int64)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        rise = np.arange(lo, mid)
        fall = np.arange(mid, hi)
        bank[j, rise] = (rise - lo) / (mid - lo)
        bank[j, fall] = (hi - fall) / (hi - mid)
    return bank


def mfcc(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    scale: float = INT16_SCALE,
    num_ceps: int = 13,
    num_filters: int = 26,
    nfft: int = 512,
    preemphasis: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """MFCC ``(num_ceps, T)`` float32 at 100 steps per second, equal to python_speech_features' defaults.

    Args:
        audio: ``(N,)`` mono float audio in [-1, 1].
        sample_rate: Hz (16 kHz in the SyncNet protocol).
        scale: multiplies the samples first (32768: int16 units, as syncnet_python feeds them).
        num_ceps / num_filters / nfft / preemphasis / lifter: python_speech_features' parameters.

    Returns:
        ``(num_ceps, T)`` with ``T = 1 + ⌈(N − 400) / 160⌉`` (1 if N ≤ 400); row 0 is the log frame energy.
    """
    signal = np.asarray(audio, dtype=np.float64).reshape(-1) * scale
    if signal.size == 0:
        raise ValueError("mfcc needs at least one audio sample")
    frame_len, frame_step = round(0.025 * sample_rate), round(0.01 * sample_rate)
    emphasised = np.append(signal[0], signal[1:] - preemphasis * signal[:-1])
    count = 1 if emphasised.size <= frame_len else 1 + int(np.ceil((emphasised.size - frame_len) / frame_step))
    padded = np.pad(emphasised, (0, (count - 1) * frame_step + frame_len - emphasised.size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::frame_step][:count]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, _EPS, energy)
    bands = power @ mel_filterbank(num_filters, nfft, sample_rate).T
    bands = np.where(bands == 0, _EPS, bands)
    ceps = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :num_ceps]
    if lifter > 0:
        ceps = ceps * (1 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter))
    ceps[:, 0] = np.log(energy)
    return np.ascontiguousarray(ceps.T, dtype=np.float32)


def prepare_frames(frames: np.ndarray, config: SyncNetConfig) -> torch.Tensor:
    """Face crops uint8 ``(N, S, S, 3)`` RGB → visual-stream input ``(N, 3, h, w)`` float32.

    The crop is resized to ``config.image_size`` (area interpolation when shrinking), the lower half is
    kept for ``region == "lower_half"``, and colours become BGR in [0, 255] (``bgr255``) or RGB in
    [-1, 1] (``rgb_signed``).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, S, S, 3) crops, got {frames.dtype} {frames.shape}")
    size = config.image_size
    out = []
    for frame in frames:
        if frame.shape[:2] != (size, size):
            shrink = frame.shape[0] > size
            frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if config.region == "lower_half":
            frame = frame[size - size // 2 :]
        out.append(frame)
    array = np.stack(out).astype(np.float32)
    array = array[..., ::-1] if config.color == "bgr255" else array / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def frame_windows(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Prepared frames ``(N, 3, h, w)`` → all windows ``(N − T + 1, 3, T, h, w)`` (a copy)."""
    count = frames.shape[0] - num_frames + 1
    if count < 1:
        return frames.new_zeros((0, frames.shape[1], num_frames, *frames.shape[2:]))
    return torch.stack([frames[i : i + num_frames] for i in range(count)]).transpose(1, 2).contiguous()


def mfcc_windows(coefficients: np.ndarray, starts: Iterable[int], num_frames: int) -> torch.Tensor:
    """MFCC windows ``(W, 1, C, 4T)`` starting at video frames ``starts`` (MFCC step ``4 · start``).

    Windows running past the end are zero-padded.
    """
    steps = MFCC_STEPS_PER_FRAME * num_frames
    out = []
    for start in starts:
        window = coefficients[:, MFCC_STEPS_PER_FRAME * start : MFCC_STEPS_PER_FRAME * start + steps]
        if window.shape[1] < steps:
            window = np.pad(window, ((0, 0), (0, steps - window.shape[1])))
        out.append(window)
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def shift_audio(audio: np.ndarray, frames: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Delay (``frames > 0``) or advance (``< 0``) ``audio`` ``(N,)`` by whole video frames, same length, zero-filled.

    Audio delayed by d frames against its video has syncnet_python AV offset −d.
    """
    samples = round(abs(frames) * sample_rate / fps)
    audio = np.asarray(audio)
    if samples == 0:
        return audio.copy()
    if samples >= audio.size:
        return np.zeros_like(audio)
    if frames > 0:
        return np.concatenate([np.zeros(samples, dtype=audio.dtype), audio[:-samples]])
    return np.concatenate([audio[samples:], np.zeros(samples, dtype=audio.dtype)])


@dataclass
class SyncScore:
    """Sync of one clip (see the module docstring for the formulas)."""

    lse_d: float
    """Min over offsets of the mean embedding distance (lower is better)."""
    lse_c: float
    """Median minus min of the mean distances (higher is better)."""
    offset: int
    """AV offset in frames, syncnet_python convention (audio lagging by d frames → −d)."""
    lse_d_at_0: float
    """Mean distance at the nominal alignment (offset 0): grows when the audio is shifted."""
    lse_c_at_0: float
    """Median minus the distance at offset 0: drops (below 0) when the audio is shifted."""
    distances: np.ndarray
    """``(2·vshift + 1,)`` mean distance per candidate; index ``j`` is audio shift ``j − vshift``."""
    num_windows: int
    """Windows averaged."""


def offset_search(visual: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> SyncScore:
    """LSE-D / LSE-C / offset from window embeddings ``(W, D)`` of the video and the audio.

    Args:
        visual: ``(W, D)`` embeddings of frame windows ``0 … W−1``.
        audio: ``(W, D)`` embeddings of the audio windows at the same starts.
        vshift: offsets ``−vshift … vshift`` frames are searched.
    """
    if visual.shape != audio.shape or visual.ndim != 2:
        raise ValueError(f"visual {tuple(visual.shape)} and audio {tuple(audio.shape)} must both be (W, D)")
    count = visual.shape[0]
    if count < 1:
        raise ValueError("offset_search needs at least one window")
    visual, audio = visual.double(), audio.double()
    padded = torch.cat([audio.new_zeros(vshift, audio.shape[1]), audio, audio.new_zeros(vshift, audio.shape[1])])
    means = []
    for k in range(2 * vshift + 1):
        means.append(torch.linalg.vector_norm(visual - padded[k : k + count] + 1e-6, dim=1).mean())
    distances = torch.stack(means).numpy()
    best = int(np.argmin(distances))
    minimum, median, at_zero = float(distances[best]), float(np.median(distances)), float(distances[vshift])
    return SyncScore(
        lse_d=minimum,
        lse_c=median - minimum,
        offset=vshift - best,
        lse_d_at_0=at_zero,
        lse_c_at_0=median - at_zero,
        distances=distances,
        num_windows=count,
    )


class SyncAccumulator:
    """Streams face crops through a SyncNet and scores them against audio at the end.

    Memory: the last ``T − 1`` prepared frames, one batch of windows and the ``(W, D)`` embeddings.

    Example::

        accumulator = SyncAccumulator(model)
        for crops in windows_of_crops:           # uint8 (B, S, S, 3) each
            accumulator.add(crops)
        score = accumulator.finish(audio)        # float (N,) at 16 kHz
    """

    def __init__(self, model: SyncNet, batch_size: int = 32, device: torch.device | str = "cpu") -> None:
        self.model = model.eval()
        self.config = model.config
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._tail: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []
        self._embeddings: list[torch.Tensor] = []
        self.num_frames = 0

    @torch.no_grad()
    def _flush(self, force: bool) -> None:
        while self._pending and (force or sum(w.shape[0] for w in self._pending) >= self.batch_size):
            windows = torch.cat(self._pending)
            batch, rest = windows[: self.batch_size], windows[self.batch_size :]
            self._pending = [rest] if rest.shape[0] else []
            embedding = self.model.embed_frames(batch.to(self.device, dtype=next(self.model.parameters()).dtype))
            self._embeddings.append(embedding.float().cpu())

    def add(self, frames: np.ndarray) -> None:
        """Append consecutive crops uint8 ``(B, S, S, 3)`` RGB."""
        if len(frames) == 0:
            return
        prepared = prepare_frames(frames, self.config)
        joined = prepared if self._tail is None else torch.cat([self._tail, prepared])
        windows = frame_windows(joined, self.config.num_frames)
        if windows.shape[0]:
            self._pending.append(windows)
        self._tail = joined[-(self.config.num_frames - 1) :] if self.config.num_frames > 1 else joined[:0]
        self.num_frames += len(frames)
        self._flush(force=False)

    @torch.no_grad()
    def finish(self, audio: np.ndarray, vshift: int = VSHIFT, sample_rate: int = SAMPLE_RATE) -> SyncScore | None:
        """Score the frames added so far against ``audio`` ``(N,)`` float in [-1, 1] (aligned at frame 0).

        Returns None when the clip is shorter than ``T + 1`` frames (no window to score).
        """
        self._flush(force=True)
        samples_per_frame = sample_rate / FPS
        usable = min(self.num_frames, int(np.floor(len(audio) / samples_per_frame)))
        count = usable - self.config.num_frames  # syncnet_python: range(0, min_length - 5)
        if count < 1:
            logger.warning("clip too short for SyncNet (%d frames): no sync score", usable)
            return None
        visual = torch.cat(self._embeddings)[:count]
        coefficients = mfcc(audio, sample_rate)
        audio_embeddings = []
        dtype = next(self.model.parameters()).dtype
        for start in range(0, count, self.batch_size):
            batch = mfcc_windows(
                coefficients, range(start, min(count, start + self.batch_size)), self.config.num_frames
            )
            audio_embeddings.append(self.model.embed_audio(batch.to(self.device, dtype=dtype)).float().cpu())
        return offset_search(visual, torch.cat(audio_embeddings), vshift)


def score_sync(
    model: SyncNet,
    frames: Iterable[np.ndarray],
    audio: np.ndarray,
    vshift: int = VSHIFT,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> SyncScore | None:
    """LSE-D / LSE-C / offset of face crops (an iterable of uint8 ``(B, S, S, 3)`` chunks) against ``audio``."""
    accumulator = SyncAccumulator(model, batch_size, device)
    for chunk in frames:
        accumulator.add(np.asarray(chunk))
    return accumulator.finish(audio, vshift)
