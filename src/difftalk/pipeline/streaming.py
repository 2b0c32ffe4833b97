"""Driving audio that arrives in chunks: live dubbing with bounded latency and flat memory (stage ⑥).

:class:`StreamingAudio` offers what the frame loop asks of :class:`~difftalk.pipeline.base.DrivingAudio`
(``has_frame``, ``source``, ``windows``) for speech that is still arriving: a microphone, a socket,
a file read block by block or 16 kHz PCM on stdin. Frame t's features are computed once the audio
up to ``t + MARGIN_FRAMES`` is in (the mel windows reach ±5 frames), so a frame can be made
``context // 2 + MARGIN_FRAMES`` frames (≈ 0.64 s for the demo model) after its audio arrived; the
features and audio behind the frame loop are dropped, so memory does not grow with the stream. Inside
the stream the features equal those of :func:`~difftalk.pipeline.base.prepare_driving_audio` on the
whole file (same silence rule); only the mel backend is local enough to stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from difftalk.constants import SILENCE_HOLD_MAX
from difftalk.io.audio import SAMPLE_RATE
from difftalk.pipeline.options import GenerateOptions
from difftalk.pipeline.source import source_indices
from difftalk.preprocess.audio_features import compute_features, replace_silent_frames

MARGIN_FRAMES = SILENCE_HOLD_MAX
"""Audio frames computed on either side of the frames kept, so kept frames match the whole-file features
(the silence rule's ±hold included)."""


class StreamingAudio:
    """Per-frame audio features of a stream of 16 kHz mono chunks, computed as the chunks arrive.

    Args:
        chunks: float32 16 kHz mono sample arrays ``(n,)`` in order (any sizes); the stream ends with them.
        num_source: frames of the reference video (1 for a photo): output frame t shows ``source(t)``.
        feature_backend: must be ``mel``.
        options: ``silence_db`` and ``loop`` are used.
        fps: output frame rate.
    """

    def __init__(
        self, chunks: Iterable[np.ndarray], num_source: int, feature_backend: str, options: GenerateOptions,
        fps: float = 25.0,
    ) -> None:  # fmt: skip
        if feature_backend != "mel":
            raise ValueError(
                f"streaming needs the mel audio features (frame-local); this model uses '{feature_backend}': "
                "generate from the whole file with `difftalk generate` instead"
            )
        if SAMPLE_RATE % fps:
            raise ValueError(f"streaming needs a whole number of samples per frame; {fps} fps at {SAMPLE_RATE} Hz")
        self._chunks: Iterator[np.ndarray] = iter(chunks)
        self._options = options
        self._fps = fps
        self._per_frame = int(SAMPLE_RATE // fps)
        period = 1 if num_source == 1 else (num_source if options.loop == "loop" else 2 * num_source - 2)
        self._sources = source_indices(num_source, period, options.loop)
        self._audio = np.zeros(0, np.float32)
        self._audio_start = 0  # absolute sample index of self._audio[0]
        self._received = 0  # samples received in all
        self._features = np.zeros((0, 16, 80), np.float16)
        self._features_start = 0  # absolute frame index of self._features[0]
        self._ended = False
        self._output_sample = 0  # samples handed to the writer so far
        self.num_frames: int | None = None
        """Frames of the whole stream, known once it has ended."""

    # --- the frame loop's side -------------------------------------------------------------------

    @property
    def computed(self) -> int:
        """Frames whose features are computed (absolute count)."""
        return self._features_start + len(self._features)

    def has_frame(self, t: int) -> bool:
        """Whether output frame ``t`` exists (reads the stream until it knows)."""
        while t >= self.computed and not self._ended:
            self._pull()
        return t < self.computed

    def source(self, t: int) -> int:
        """The reference frame output frame ``t`` shows."""
        return int(self._sources[t % len(self._sources)])

    def windows(self, times: np.ndarray, context: int) -> np.ndarray:
        """``(len(times), context, 16, F)`` float32 feature windows of frames ``t - w … t + w`` (edges repeated)."""
        times = np.asarray(times)
        offsets = np.arange(-(context // 2), context - context // 2)
        self.has_frame(int(times.max()) + context - context // 2 - 1)
        index = np.clip(times[:, None] + offsets, 0, self.computed - 1)
        if index.min() < self._features_start:
            raise RuntimeError(f"frame {index.min()} was released; the frame loop must go forwards")
        return self._features[index - self._features_start].astype(np.float32)

    def release(self, before: int, context: int) -> None:
        """Drop features that no frame from ``before`` on needs."""
        keep_from = max(0, before - context // 2)
        drop = min(max(0, keep_from - self._features_start), len(self._features))
        self._features = self._features[drop:]
        self._features_start += drop

    def audio_until(self, frames: int) -> np.ndarray:
        """The driving audio of output frames up to ``frames`` not yet handed out (for the writer)."""
        end = min(frames * self._per_frame, self._audio_start + len(self._audio))
        if self.num_frames is not None:
            end = max(end, min(frames, self.num_frames) * self._per_frame)
        start = self._output_sample
        out = np.zeros(max(0, end - start), np.float32)
        lo, hi = max(start, self._audio_start), min(end, self._audio_start + len(self._audio))
        if hi > lo:
            out[lo - start : hi - start] = self._audio[lo - self._audio_start : hi - self._audio_start]
        self._output_sample = max(start, end)
        self._trim_audio()
        return out

    # --- reading and computing -------------------------------------------------------------------

    def _pull(self) -> None:
        """Read one more chunk (or notice the end) and compute every frame it completes."""
        chunk = next(self._chunks, None)
        if chunk is None:
            self._ended = True
            self.num_frames = max(1, round(self._received / SAMPLE_RATE * self._fps))
            total = self.num_frames * self._per_frame  # like fit_length: pad with silence or trim
            pad = max(0, total - (self._audio_start + len(self._audio)))
            self._audio = np.concatenate([self._audio, np.zeros(pad, np.float32)])[: max(0, total - self._audio_start)]
            self._compute(self.num_frames)
            return
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, chunk])
        self._received += chunk.size
        self._compute(self._received // self._per_frame - MARGIN_FRAMES)

    def _compute(self, until: int) -> None:
        """Features of frames ``computed … until - 1`` from the buffered audio."""
        first = self.computed
        if until <= first:
            return
        lead = min(MARGIN_FRAMES, first)  # frames of left context (none at the start, like the whole file)
        start = (first - lead) * self._per_frame
        end = (until + MARGIN_FRAMES) * self._per_frame if not self._ended else self._audio_start + len(self._audio)
        segment = self._audio[start - self._audio_start : end - self._audio_start]
        count = lead + (until - first) + (MARGIN_FRAMES if not self._ended else 0)
        segment = np.pad(segment, (0, max(0, count * self._per_frame - segment.size)))
        features = compute_features(segment, count, backend="mel", fps=self._fps)
        replace_silent_frames(features, segment, self._options.silence_db, "mel", self._fps, self._options.silence_hold)
        self._features = np.concatenate([self._features, features[lead : lead + until - first]])
        self._trim_audio()

    def _trim_audio(self) -> None:
        """Drop audio that neither the features still to compute nor the writer need."""
        needed = min((self.computed - MARGIN_FRAMES) * self._per_frame, self._output_sample)
        drop = min(max(0, needed - self._audio_start), len(self._audio))
        self._audio = self._audio[drop:]
        self._audio_start += drop


def read_chunks(source: str | Path, seconds: float = 0.2) -> Iterator[np.ndarray]:
    """16 kHz mono float32 chunks of about ``seconds`` from ``source``, read incrementally.

    ``-`` reads raw 16-bit little-endian 16 kHz mono PCM from stdin (e.g. ``ffmpeg -i mic -f s16le -ar 16000
    -ac 1 -``); a file is read block by block in any format and rate soundfile reads, mixed to mono and
    resampled as it streams (soxr).

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    import sys

    block = max(1, int(seconds * SAMPLE_RATE))
    if str(source) == "-":
        stream = sys.stdin.buffer
        while data := stream.read(2 * block):
            usable = len(data) // 2 * 2
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        return
    import soundfile
    import soxr

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"audio {path} does not exist")
    with soundfile.SoundFile(str(path)) as audio_file:
        rate = audio_file.samplerate
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
        size = max(1, int(seconds * rate))
        while True:
            data = audio_file.read(size, dtype="float32", always_2d=True)
            last = len(data) < size
            mono = data.mean(axis=1).astype(np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if mono.size:
                yield mono
            if last:
                return
