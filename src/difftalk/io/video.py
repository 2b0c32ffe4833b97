"""Video files: probe, stream frames at a target fps, and write H.264/AAC MP4 (stage ①).

Reading streams decoded frames one at a time (memory is flat in video length), applies the
container's rotation metadata and resamples to a target frame rate by timestamp. Writing encodes
H.264 (yuv420p, browser-playable, ``faststart``) and, optionally, AAC audio (the audio's own channels
and sample rate) interleaved with the frames; it writes to a temporary file and renames it only when
complete, so an interrupted or failed run never leaves a partial file that looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from difftalk.constants import FPS
from difftalk.io.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

MAX_PIXELS = 8192 * 8192
"""Refuse frames larger than this (bounded untrusted input)."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
"""Sample rates AAC can carry; other rates are resampled to the next one up."""
AAC_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1"}
"""The channel layout written for each channel count; audio with more channels is mixed down to mono."""


class VideoError(ValueError):
    """A video input cannot be used."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a media file."""

    path: Path
    fps: float
    """Average frame rate of the video stream."""
    num_frames: int
    """Frame count from the container, or estimated from duration × fps."""
    width: int
    """Display width (after rotation)."""
    height: int
    """Display height (after rotation)."""
    rotation: int
    """Counter-clockwise display rotation in degrees (0, 90, 180, 270)."""
    duration: float
    """Seconds."""
    has_audio: bool


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} does not exist")
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{path} is not a readable video ({exc}); use an MP4, MOV, MKV, AVI or WebM file") from None


def _rotation_of(stream: av.video.stream.VideoStream) -> int:
    for key in ("rotate",):
        if key in stream.metadata:
            return int(float(stream.metadata[key])) % 360
    return 0


def probe_video(path: str | Path) -> VideoInfo:
    """Read the stream parameters of a video file.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoError: the file is empty, corrupt or has no video stream.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream (audio only?); pass a video or an image of the face")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps or not math.isfinite(fps) or fps <= 0:
            raise VideoError(f"{path}: the video stream has no usable frame rate")
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        num_frames = int(stream.frames) or round(duration * fps)
        width, height = stream.codec_context.width, stream.codec_context.height
        rotation = _rotation_of(stream)
        first = None
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError):
            first = None
        if first is None:
            raise VideoError(f"{path}: no video frame can be decoded (corrupt or truncated file)")
        if first.rotation:
            rotation = round(first.rotation) % 360
        if width * height > MAX_PIXELS:
            raise VideoError(f"{path}: {width}x{height} frames exceed the {MAX_PIXELS} pixel limit; downscale first")
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            fps=fps,
            num_frames=max(num_frames, 1),
            width=width,
            height=height,
            rotation=rotation,
            duration=duration or num_frames / fps,
            has_audio=bool(container.streams.audio),
        )


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation (FFmpeg display-matrix convention)."""
    quarter = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=quarter)) if quarter else image


def iter_frames(path: str | Path, fps: float | None = None) -> Iterator[np.ndarray]:
    """Stream the frames of a video as uint8 ``(H, W, 3)`` RGB, upright.

    Args:
        path: any container/codec FFmpeg reads.
        fps: resample to this frame rate by timestamp (frames are repeated or dropped); ``None``
            keeps every decoded frame.

    Raises:
        VideoError: the file cannot be decoded at all. A stream that breaks off part-way ends the
            iteration with a warning (the frames read so far are kept).
    """
    path = Path(path)
    container = _open(path)
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = float(stream.time_base) if stream.time_base else 0.0
        next_time = 0.0
        previous: tuple[float, np.ndarray] | None = None
        count = 0
        try:
            for frame in container.decode(stream):
                if frame.width * frame.height > MAX_PIXELS:
                    raise VideoError(f"{path}: {frame.width}x{frame.height} frames exceed the pixel limit")
                image = _upright(frame.to_ndarray(format="rgb24"), round(frame.rotation or 0))
                count += 1
                if fps is None:
                    yield image
                    continue
                stamp = float(frame.pts) * time_base if frame.pts is not None and time_base else count / fps
                if previous is None:
                    next_time = stamp
                else:
                    # Emit the previous frame for every output time before the midpoint to this one.
                    boundary = (previous[0] + stamp) / 2
                    while next_time < boundary:
                        yield previous[1]
                        next_time += 1.0 / fps
                previous = (stamp, image)
        except av.error.FFmpegError as exc:
            if count == 0:
                raise VideoError(f"{path}: no video frame can be decoded ({exc})") from None
            logger.warning("%s: decoding stopped after %d frames (%s); the file looks truncated", path, count, exc)
        if count == 0:
            raise VideoError(f"{path}: the video stream has no frames")
        if fps is not None and previous is not None:
            end = previous[0] + 1.0 / max(float(stream.average_rate or fps), 1e-6)
            while next_time < end - 1e-9:
                yield previous[1]
                next_time += 1.0 / fps


def read_frames(path: str | Path, fps: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """All (or the first ``max_frames``) frames as uint8 ``(N, H, W, 3)``; for short clips and tests."""
    frames = []
    for image in iter_frames(path, fps):
        frames.append(image)
        if max_frames is not None and len(frames) >= max_frames:
            break
    return np.stack(frames)


def is_image_file(path: str | Path) -> bool:
    """True for a still-image path (by suffix)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _layout(channels: int) -> str:
    """The FFmpeg channel layout name written for ``channels`` (``mono``, ``stereo``, ``5.1``, ...)."""
    return AAC_LAYOUTS[channels]


def _aac_audio(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """``(C, N)`` float32 audio at a rate AAC has (``sample_rate`` itself when it can)."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    if samples.ndim != 2 or samples.shape[0] < 1:
        raise ValueError(f"audio must be (N,) mono or (C, N) with C channels, got shape {samples.shape}")
    if samples.shape[0] not in AAC_LAYOUTS:
        logger.warning("%d audio channels are more than the writer keeps; mixing them down to mono", len(samples))
        samples = samples.mean(axis=0, keepdims=True)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    rate = next((r for r in AAC_SAMPLE_RATES if r >= sample_rate), AAC_SAMPLE_RATES[-1])
    if rate != sample_rate:
        import librosa

        logger.info("AAC has no %d Hz; the audio is resampled to %d Hz", sample_rate, rate)
        samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=rate, res_type="soxr_hq", axis=-1)
    return np.ascontiguousarray(samples, dtype=np.float32), rate


class VideoWriter:
    """Write an H.264 (+ optional AAC) MP4 frame by frame; atomic on success.

    Example::

        with VideoWriter("out.mp4", fps=25, audio=speech) as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = FPS,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
        crf: int = 18,
        metadata: Mapping[str, str] | None = None,
        streamed_audio_channels: int | None = None,
    ) -> None:
        """Open the writer.

        Args:
            path: output ``.mp4``; written as a hidden temporary file and renamed on :meth:`close`.
            fps: frame rate.
            audio: optional float32 audio in [-1, 1] at ``sample_rate``, muxed as AAC: ``(N,)`` mono or
                ``(C, N)`` with C channels (1-7 are kept; more are mixed down to mono).
            sample_rate: sample rate of ``audio``; kept in the file (a rate AAC lacks is resampled to
                the next one it has).
            crf: x264 constant rate factor (lower is better quality).
            metadata: container tags (``title``, ``comment``, ...).
            streamed_audio_channels: instead of ``audio``, audio of this many channels arrives with the frames
                through :meth:`append_audio` (live streaming; memory stays flat).
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self.fps = fps
        self._audio: np.ndarray | None = None
        self._sample_rate = sample_rate
        if audio is not None:
            self._audio, self._sample_rate = _aac_audio(audio, sample_rate)
        elif streamed_audio_channels is not None:
            self._audio = np.zeros((streamed_audio_channels, 0), np.float32)
        self._audio_written = 0
        self._audio_base = 0  # samples dropped from the front of self._audio after they were encoded
        self._crf = crf
        self._streamed = audio is None and streamed_audio_channels is not None
        try:
            self._container = av.open(str(self._tmp), "w", options={"movflags": "+faststart"})
        except ValueError as exc:  # PyAV: "Could not determine output format"
            raise VideoError(
                f"cannot write {self.path}: FFmpeg has no video format for the extension "
                f"{self.path.suffix or '(none)'!r} ({exc}); name the output .mp4"
            ) from None
        for key, value in (metadata or {}).items():
            self._container.metadata[key] = str(value)
        self._video: av.video.stream.VideoStream | None = None
        self._audio_stream: av.audio.stream.AudioStream | None = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0
        self._closed = False

    def _setup(self, height: int, width: int) -> None:
        self._size = (height, width)
        stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self._crf), "preset": "medium"}
        self._video = stream
        if self._audio is not None:
            audio_stream = self._container.add_stream("aac", rate=self._sample_rate)
            audio_stream.layout = _layout(self._audio.shape[0])
            self._audio_stream = audio_stream

    def _write_audio_until(self, sample: int) -> None:
        if self._audio is None or self._audio_stream is None:
            return
        chunk = 1024
        total = self._audio_base + self._audio.shape[1]
        sample = min(sample, total)
        layout = _layout(self._audio.shape[0])
        while self._audio_written < sample:
            begin = self._audio_written - self._audio_base
            part = self._audio[:, begin : begin + min(chunk, sample - self._audio_written)]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=layout)
            frame.sample_rate = self._sample_rate
            frame.pts = self._audio_written
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
            self._audio_written += part.shape[1]
        if self._streamed:  # drop what is encoded, so a long stream keeps memory flat
            self._audio = self._audio[:, self._audio_written - self._audio_base :]
            self._audio_base = self._audio_written

    def append_audio(self, samples: np.ndarray) -> None:
        """Add streamed audio (float32 ``(N,)`` mono or ``(C, N)``) at the writer's sample rate; it is muxed
        as the frames reach it (opened with ``streamed_audio_channels``)."""
        if not self._streamed or self._audio is None:
            raise ValueError("append_audio needs a writer opened with streamed_audio_channels (and no audio=)")
        block = np.asarray(samples, dtype=np.float32).reshape(self._audio.shape[0], -1)
        self._audio = np.concatenate([self._audio, np.clip(block, -1.0, 1.0)], axis=1)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 ``(H, W, 3)`` RGB frame (all frames share one size)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        if self._size is None:
            self._setup(frame.shape[0], frame.shape[1])
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size changed from {self._size} to {frame.shape[:2]}")
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        assert self._video is not None
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._video.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1
        self._write_audio_until(round(self.frames_written / self.fps * self._sample_rate))

    def close(self) -> Path:
        """Flush the encoders, finish the file and move it into place; returns the path."""
        if self._closed:
            return self.path
        if self._video is None:
            self.abort()
            raise VideoError(f"no frames were written to {self.path}")
        for packet in self._video.encode():
            self._container.mux(packet)
        if self._audio is not None and self._audio_stream is not None:
            self._write_audio_until(self._audio_base + self._audio.shape[1])
            for packet in self._audio_stream.encode():
                self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(av.error.FFmpegError):
            self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class _Cursor:
    """One open decoder of a :class:`FrameReader`, moving forward: its next frame index and its last use."""

    frames: Iterator[tuple[int, np.ndarray]]
    next: int
    used: int


class FrameReader:
    """Frames of a video resampled to ``fps``, by index, with bounded memory.

    Frames come from up to ``streams`` open decoders (cursors), each moving forward: an index at most
    ``block`` frames ahead of a cursor advances that cursor, so several interleaved forward readers (the
    pipeline's face crops and its paste-back, each reading in order) each stream without seeking. Any other
    index opens a new cursor at a keyframe before it (closing the least recently used one), except reading
    backwards (the backward half of a ping-pong loop), which decodes a block of ``block`` frames ending at
    the index. At most ``2 * block`` frames are held. Index k maps to the decoded frame nearest to time
    ``t0 + k / fps`` (t0 = the first frame's time), the same rule as :func:`iter_frames`, so both give
    identical frames.
    """

    def __init__(self, path: str | Path, fps: float, block: int = 32, streams: int = 4) -> None:
        if block < 1 or streams < 1:
            raise ValueError(f"block and streams must be >= 1, got {block}, {streams}")
        self.path = Path(path)
        self.fps = fps
        self.block = block
        self.streams = streams
        self._cache: dict[int, np.ndarray] = {}
        self._cursors: list[_Cursor] = []
        self._clock = 0
        self._last = -2
        self.decoded = 0
        """Frames decoded so far, about (a frame decoded twice counts twice): what the access pattern costs."""
        info = probe_video(self.path)
        self.num_frames_hint = max(1, round(info.duration * fps))
        self._t0: float | None = None

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        while len(self._cache) > 2 * self.block:
            self._cache.pop(max(self._cache, key=lambda k: abs(k - index)))

    def _first_time(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
        if self._t0 is None:
            for frame in container.decode(stream):
                base = float(stream.time_base) if stream.time_base else 0.0
                self._t0 = frame.pts * base if frame.pts is not None else 0.0
                break
            container.seek(0, stream=stream, backward=True, any_frame=False)
        return self._t0 or 0.0

    def _decode_from(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for ``start``, ``start + 1``, … to the end of the video, after seeking to a keyframe
        at least a second before frame ``start``."""
        if start == 0:
            for index, image in enumerate(iter_frames(self.path, self.fps)):
                self.decoded += 1
                yield index, image
            return
        with _open(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base = float(stream.time_base) if stream.time_base else 1.0 / self.fps
            t0 = self._first_time(container, stream)
            target = max(0.0, t0 + start / self.fps - 1.0)
            container.seek(int(target / time_base), stream=stream, backward=True, any_frame=False)
            index = start
            previous: tuple[float, np.ndarray] | None = None
            try:
                for frame in container.decode(stream):
                    self.decoded += 1
                    stamp = float(frame.pts * time_base) if frame.pts is not None else 0.0
                    image = _upright(frame.to_ndarray(format="rgb24"), round(frame.rotation or 0))
                    if previous is not None:
                        boundary = (previous[0] + stamp) / 2
                        while t0 + index / self.fps < boundary:
                            yield index, previous[1]
                            index += 1
                    elif stamp > t0 + index / self.fps:
                        while t0 + index / self.fps < stamp:
                            yield index, image
                            index += 1
                    previous = (stamp, image)
            except av.error.FFmpegError as exc:
                logger.warning(
                    "%s: decoding stopped near frame %d (%s); the file looks truncated",
                    self.path,
                    index,
                    exc,
                )
            if previous is not None:
                end = previous[0] + 1.0 / max(float(stream.average_rate or self.fps), 1e-6)
                while t0 + index / self.fps < end - 1e-9:
                    yield index, previous[1]
                    index += 1

    def _load_block(self, start: int, end: int) -> None:
        """Decode frames ``start … end - 1`` (fewer at the end of the video) after seeking to a keyframe before them."""
        frames = self._decode_from(start)
        for index, image in frames:
            self._remember(index, image)
            if index >= end - 1:
                break
        frames.close()  # type: ignore[attr-defined]

    def _advance(self, cursor: _Cursor, index: int) -> np.ndarray | None:
        """Move ``cursor`` on to ``index`` and return that frame; None (the cursor closed) past the end."""
        cursor.used = self._clock
        frame = None
        while cursor.next <= index:
            step = next(cursor.frames, None)
            if step is None:
                self._cursors.remove(cursor)
                return None
            cursor.next = step[0] + 1
            frame = step[1]
            self._remember(step[0], frame)
        return frame

    def _open_cursor(self, start: int) -> _Cursor:
        if len(self._cursors) >= self.streams:
            oldest = min(self._cursors, key=lambda c: c.used)
            self._cursors.remove(oldest)
            oldest.frames.close()  # type: ignore[attr-defined]
        cursor = _Cursor(self._decode_from(start), start, self._clock)
        self._cursors.append(cursor)
        return cursor

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` (uint8 ``(H, W, 3)``); IndexError past the end of the video."""
        if index < 0:
            raise IndexError(index)
        backwards, self._last = index == self._last - 1, index
        if index in self._cache:
            return self._cache[index]
        self._clock += 1
        ahead = [c for c in self._cursors if c.next <= index < c.next + self.block]
        if ahead:
            frame = self._advance(max(ahead, key=lambda c: c.next), index)
        elif backwards and index >= self.block:
            self._load_block(index - self.block + 1, index + 1)
            frame = self._cache.get(index)
        else:
            frame = self._advance(self._open_cursor(index if index >= self.block else 0), index)
        if frame is None:
            raise IndexError(f"{self.path} has no frame {index} at {self.fps:g} fps")
        return frame
