"""What every talking-head generator shares: the source video, the driving audio, writing the MP4 (stage ⑥).

Vocabulary: the *source* is the video being dubbed (or the photo being animated); the *reference* is the
identity frame of that source the model is conditioned on (``--reference-frame``, progressive reference).

A subclass only says how output frames are made (:meth:`TalkingHeadPipeline.iter_frames`); this
class analyses the source once (:meth:`set_source`), fits the audio to the output and turns it
into per-frame features (:func:`prepare_driving_audio`), and streams the frames into an H.264/AAC
MP4 with the invisible watermark and provenance tags (:meth:`generate`). The models hear 16 kHz mono;
the MP4 carries the user's audio file as it is (its own sample rate and channels), fitted to the video.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from difftalk.checkpoint import read_checkpoint_meta
from difftalk.data.masks import mouth_mask
from difftalk.io.audio import SAMPLE_RATE, AudioClip, fit_length, read_audio
from difftalk.io.video import VideoWriter
from difftalk.pipeline.options import GenerateOptions
from difftalk.pipeline.paste import paste_back
from difftalk.pipeline.source import SourceFrames, SourceTrack, analyze_source, source_indices
from difftalk.preprocess.audio_features import FEATURE_DIMS, compute_features, replace_silent_frames
from difftalk.preprocess.crop import crop_image, frame_to_crop

logger = logging.getLogger(__name__)

from difftalk.constants import FPS  # noqa: E402  (kept importable as difftalk.pipeline.base.FPS)

WATERMARK_PAYLOAD = 0x44546C6B  # "DTlk"
TRACK_CACHE_SIZE = 8
"""Reference analyses a pipeline keeps (landmarks and crop boxes: small next to the model)."""


@dataclass
class GenerationResult:
    """What a pipeline's ``generate`` wrote."""

    output: Path
    num_frames: int
    duration: float
    generated_frames: int
    """Frames whose mouth was generated (the others had no face and were passed through)."""
    seconds: float
    """Wall time of the whole run."""
    first_frame_seconds: float = float("nan")
    """Wall time from the start of the run until the first frame was written."""

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / max(self.seconds, 1e-9)


@dataclass
class StreamedFrame:
    """One frame of :meth:`TalkingHeadPipeline.stream`."""

    index: int
    image: np.ndarray
    """uint8 ``(H, W, 3)`` RGB, watermarked unless the options turn it off."""
    generated: bool
    """Whether its mouth was generated (False: no face, passed through)."""
    audio: np.ndarray
    """float32 16 kHz mono: the driving audio of this frame (1/25 s; what to play with it)."""


@dataclass
class DrivingAudio:
    """The audio of one run, fitted to the output and turned into per-frame features."""

    samples: np.ndarray
    """``(N,)`` float32 16 kHz mono, exactly ``num_frames / 25`` s long."""
    features: np.ndarray
    """``(num_frames, 16, F)`` feature windows (silent frames carry digital silence's features)."""
    source_index: np.ndarray
    """``(num_frames,)`` source frame shown at each output frame."""
    original: AudioClip | None = None
    """The audio file as it is (own rate and channels), fitted to the same duration; written to the output.
    None when the audio was given as 16 kHz samples (then ``samples`` are written)."""

    @property
    def num_frames(self) -> int:
        return int(self.source_index.size)

    def windows(self, times: np.ndarray, context: int) -> np.ndarray:
        """``(len(times), context, 16, F)`` float32: the windows of frames ``t - w … t + w`` (edges repeated)."""
        offsets = np.arange(-(context // 2), context - context // 2)
        index = np.clip(np.asarray(times)[:, None] + offsets, 0, self.num_frames - 1)
        return self.features[index].astype(np.float32)

    def has_frame(self, t: int) -> bool:
        """Whether output frame ``t`` exists (the frame loop's question; a stream answers it as audio arrives)."""
        return t < self.num_frames

    def source(self, t: int) -> int:
        """The source frame output frame ``t`` shows."""
        return int(self.source_index[t])

    def release(self, before: int, context: int) -> None:
        """Nothing to drop: the whole file's features are small (a stream drops what is behind the loop)."""


class Driving(Protocol):
    """What the frame loop asks of the driving audio: :class:`DrivingAudio` (a whole file) or
    :class:`~difftalk.pipeline.streaming.StreamingAudio` (chunks as they arrive)."""

    def has_frame(self, t: int) -> bool: ...
    def source(self, t: int) -> int: ...
    def windows(self, times: np.ndarray, context: int) -> np.ndarray: ...
    def release(self, before: int, context: int) -> None: ...


def prepare_driving_audio(
    audio: str | Path | np.ndarray, track: SourceTrack, feature_backend: str, options: GenerateOptions
) -> DrivingAudio:
    """Load ``audio`` (a file, or 16 kHz mono float32 samples), fit it to the output length and compute its
    per-frame features; silent frames get the features of digital silence (a closed mouth). A file is also
    kept as it is (``DrivingAudio.original``: its own rate and channels, for the output video)."""
    if isinstance(audio, np.ndarray):
        clip, samples = None, audio.astype(np.float32)
    else:
        clip = read_audio(audio)
        samples = clip.mono(SAMPLE_RATE)
    if options.length == "audio" or track.is_image:
        num_frames = max(1, round(len(samples) / SAMPLE_RATE * FPS))
    else:
        num_frames = track.num_frames
    samples = fit_length(samples, round(num_frames / FPS * SAMPLE_RATE))
    backend: Any = feature_backend
    features = compute_features(samples, num_frames, backend=backend, fps=FPS)
    replace_silent_frames(features, samples, options.silence_db, backend, hold=options.silence_hold)
    original = None if clip is None else clip.fit_seconds(num_frames / FPS)
    return DrivingAudio(samples, features, source_indices(track.num_frames, num_frames, options.loop), original)


def resolve_output_path(output: str | Path, source: str | Path, audio: str | Path | np.ndarray) -> Path:
    """The file a run writes for ``-o output``.

    A folder (an existing one, or a path ending in ``/``) gets ``<source stem>_<audio stem>.mp4``
    (``audio`` for samples given as an array); a name without an extension gets ``.mp4``; anything else
    is used as it is.
    """
    path = Path(output)
    if str(output).endswith(("/", os.sep)) or path.is_dir():
        audio_stem = "audio" if isinstance(audio, np.ndarray) else Path(audio).stem
        return path / f"{Path(source).stem}_{audio_stem}.mp4"
    return path if path.suffix else path.with_name(f"{path.name}.mp4")


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """The model's view of one source frame: its face crop and what goes with it."""

    image: np.ndarray
    """``(S, S, 3)`` uint8 RGB face crop."""
    landmarks: np.ndarray
    """``(68, 2)`` float32 landmarks in crop pixels."""
    mask: np.ndarray
    """``(S, S)`` float32 mouth mask in [0, 1] (1 = regenerated)."""
    box: np.ndarray
    """``(4,)`` float32 crop box ``x0, y0, x1, y1`` in frame pixels."""


@dataclass(frozen=True, eq=False)
class GeneratedMouth:
    """A generated face crop, ready to be pasted back into its frame."""

    crop: np.ndarray
    """``(S, S, 3)`` uint8 RGB generated crop."""
    weight: np.ndarray
    """``(S, S)`` float32 paste-back weight in [0, 1] (the lower face, feathered)."""
    box: np.ndarray
    """``(4,)`` float32 crop box in frame pixels."""


class OutputFrame(NamedTuple):
    """One output frame of :meth:`TalkingHeadPipeline.iter_frames`."""

    image: np.ndarray
    """``(H, W, 3)`` uint8 RGB full frame, before the watermark."""
    generated: bool
    """Whether its mouth was generated (False: no face, the source frame passed through untouched)."""


def crop_inputs(frame: np.ndarray, track: SourceTrack, index: int, size: int) -> FaceCrop:
    """The face crop of source frame ``index`` at ``size``, its landmarks, mouth mask and crop box."""
    box = track.boxes[index]
    points = frame_to_crop(track.landmarks[index], box, size)
    return FaceCrop(crop_image(frame, box, size), points, mouth_mask(points, size), box)


def first_reference(track: SourceTrack, wanted: int) -> int:
    """The reference frame: source frame ``wanted`` (clipped), or the first frame with a face if it has none."""
    index = int(np.clip(wanted, 0, track.num_frames - 1))
    return index if track.found[index] else int(np.flatnonzero(track.found)[0])


def feature_backend_of(directory: str | Path, kind: str, feature_dim: int) -> str:
    """The audio feature backend a checkpoint was trained on (recorded at export, else from its size)."""
    backend = read_checkpoint_meta(directory, kind).get("extra", {}).get("feature_backend")
    if backend is None:
        backend = {v: k for k, v in FEATURE_DIMS.items()}.get(feature_dim, "mel")
    if backend == "precomputed":
        raise ValueError(
            f"{directory} was trained on precomputed DeepSpeech features, which cannot be computed from new "
            "audio; train with data.feature_backend mel or whisper"
        )
    return str(backend)


@dataclass(frozen=True)
class ReadyFrame:
    """Output frame ``t`` after frame interpolation: its generated mouth, or None (no face: passed through)."""

    t: int
    mouth: GeneratedMouth | None


class TemporalBlend:
    """Frame interpolation: ``crop_t ← (1 − 2a) crop_t + a (crop_{t−1} + crop_{t+1})`` when both neighbours
    were generated (a frame next to a faceless one, the first and the last are left as is).

    A frame is handed on as soon as it can be: at once when it will not be blended (no generated frame
    before it, or ``a = 0``), else when its right neighbour arrives (a one-frame delay)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self._before: GeneratedMouth | None = None
        """The mouth of the last frame pushed (None: it had no face, or nothing was pushed yet)."""
        self._pending: tuple[int, GeneratedMouth, GeneratedMouth] | None = None
        """(t, mouth, its left neighbour's mouth) of a frame that waits for its right neighbour."""

    def _blend(self, t: int, mouth: GeneratedMouth, before: GeneratedMouth, after: GeneratedMouth | None) -> ReadyFrame:
        if after is None:
            return ReadyFrame(t, mouth)
        mixed = (1 - 2 * self.weight) * mouth.crop.astype(np.float32) + self.weight * (
            before.crop.astype(np.float32) + after.crop.astype(np.float32)
        )
        crop = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return ReadyFrame(t, GeneratedMouth(crop, mouth.weight, mouth.box))

    def push(self, t: int, mouth: GeneratedMouth | None) -> list[ReadyFrame]:
        """Add frame t (``mouth`` None: no face); returns the frames that are now final, in order."""
        ready = []
        if self._pending is not None:
            ready.append(self._blend(*self._pending, mouth))
            self._pending = None
        if mouth is None:
            ready.append(ReadyFrame(t, None))
        elif self.weight > 0 and self._before is not None:
            self._pending = (t, mouth, self._before)
        else:
            ready.append(ReadyFrame(t, mouth))
        self._before = mouth
        return ready

    def flush(self) -> list[ReadyFrame]:
        """The frame still waiting (the last one has no right neighbour: left as is)."""
        ready = [self._blend(*self._pending, None)] if self._pending is not None else []
        self._pending = self._before = None
        return ready


def compose_frame(frames: SourceFrames, driving: Driving, ready: ReadyFrame) -> OutputFrame:
    """Output frame ``ready.t``: its source frame with the generated mouth pasted back, or as it is (no face)."""
    frame = frames[driving.source(ready.t)]
    mouth = ready.mouth
    if mouth is None:
        return OutputFrame(frame, False)
    return OutputFrame(paste_back(frame, mouth.crop, mouth.box, mouth.weight), True)


class TalkingHeadPipeline:
    """Base of the generators: subclasses implement :meth:`iter_frames` (and ``from_pretrained``)."""

    method = "talking-head"

    def __init__(
        self,
        feature_backend: str,
        feature_dim: int,
        model_name: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.feature_backend = feature_backend
        self.model_name = model_name
        self.device = torch.device(device)
        self.dtype = dtype
        self.source: SourceTrack | None = None
        self._source_options: GenerateOptions | None = None
        self._tracks: dict[tuple[Any, ...], SourceTrack] = {}
        self.analyses = 0
        """How many times :meth:`set_source` analysed a file (reuses of a kept analysis not counted)."""
        expected = FEATURE_DIMS.get(feature_backend)
        if expected is not None and expected != feature_dim:
            raise ValueError(
                f"the model expects {feature_dim} audio features, but the '{feature_backend}' backend gives {expected}"
            )

    def set_source(self, source: str | Path, options: GenerateOptions | None = None) -> SourceTrack:
        """Analyse the source video (to dub) or photo (to animate) once; later :meth:`generate` calls reuse it.

        The last :data:`TRACK_CACHE_SIZE` analyses are kept: setting a source again (the same file,
        unchanged on disk, with the same ``landmarks``, ``detector`` and ``max_side``) reuses its analysis.
        """
        options = options or GenerateOptions()
        path = Path(source)
        key: tuple[Any, ...] | None = None
        if path.is_file():
            stat = path.stat()
            key = (
                path.resolve(),
                stat.st_mtime_ns,
                stat.st_size,
                options.landmarks,
                options.detector,
                options.max_side,
            )
        track = self._tracks.pop(key, None) if key is not None else None
        if track is None:
            track = analyze_source(
                source,
                FPS,
                landmarks=options.landmarks,
                max_side=options.max_side,
                progress=options.progress,
                detector=options.detector,
            )
            self.analyses += 1
        else:
            logger.info("reusing the analysis of %s", path)
        if key is not None:
            self._tracks[key] = track  # most recent last
            while len(self._tracks) > TRACK_CACHE_SIZE:
                self._tracks.pop(next(iter(self._tracks)))
        self.source = track
        self._source_options = options
        return track

    def set_reference(self, source: str | Path, options: GenerateOptions | None = None) -> SourceTrack:
        """Deprecated name of :meth:`set_source` (the reference is the identity frame, not the dubbed video)."""
        warnings.warn("set_reference() is now set_source()", DeprecationWarning, stacklevel=2)
        return self.set_source(source, options)

    def __call__(
        self, source: str | Path, audio: str | Path | np.ndarray, output: str | Path, **options: Any
    ) -> GenerationResult:
        """``set_source(source)`` then ``generate(audio, output)``; keyword options as in GenerateOptions."""
        opts = GenerateOptions(**options)
        self.set_source(source, opts)
        return self.generate(audio, output, opts)

    def track(self) -> SourceTrack:
        """The analysed source (raises if :meth:`set_source` was not called)."""
        if self.source is None:
            raise ValueError("call set_source(video_or_photo) before generate(audio, output)")
        return self.source

    def iter_frames(self, driving: Driving, options: GenerateOptions) -> Iterator[OutputFrame]:
        """Yield an :class:`OutputFrame` ``(image, generated)`` per output frame, in order."""
        raise NotImplementedError

    def provenance(self, options: GenerateOptions) -> dict[str, Any]:
        """Extra fields recorded in the output's provenance tags."""
        return {"method": self.method, "source": self.track().path.name, "seed": options.seed}

    def stream(self, chunks: Iterable[np.ndarray], options: GenerateOptions | None = None) -> Iterator[StreamedFrame]:
        """Dub the source with speech that is still arriving; yields each frame as soon as it is made.

        ``chunks``: float32 16 kHz mono sample arrays in order, any sizes (a microphone, a socket,
        :func:`~difftalk.pipeline.streaming.read_chunks` of a file or stdin). A frame follows its audio by
        the model's audio context plus a small feature margin (about 0.64 s for the demo model) and the
        sampling time; memory stays flat however long the stream runs. The output follows the audio's
        length (``options.length`` is ignored); use ``lanes=1`` (the default) for the lowest latency.
        """
        from difftalk.io.watermark import embed_watermark
        from difftalk.pipeline.streaming import StreamingAudio

        options = options or self._source_options or GenerateOptions()
        track = self.track()
        driving = StreamingAudio(chunks, track.num_frames, self.feature_backend, options, FPS)
        for index, (frame, generated) in enumerate(self.iter_frames(driving, options)):
            image = embed_watermark(frame, WATERMARK_PAYLOAD) if options.watermark else frame
            yield StreamedFrame(index, image, generated, driving.audio_until(index + 1))

    def stream_to_file(
        self, chunks: Iterable[np.ndarray], output: str | Path, options: GenerateOptions | None = None
    ) -> GenerationResult:
        """:meth:`stream` into an MP4 (H.264 + the streamed audio as AAC, watermark and provenance tags),
        written as the frames come; the file appears (atomically) when the stream ends."""
        from difftalk.io.watermark import provenance_tags

        options = options or self._source_options or GenerateOptions()
        start = time.perf_counter()
        output = resolve_output_path(output, self.track().path, "stream.wav")
        metadata = provenance_tags(
            self.model_name, self.provenance(options), payload=WATERMARK_PAYLOAD if options.watermark else None
        )
        generated, first, count = 0, float("nan"), 0
        bar = tqdm(desc=f"{self.method} (stream)", unit="frame", disable=not options.progress)
        with VideoWriter(output, fps=FPS, sample_rate=SAMPLE_RATE, crf=options.crf, metadata=metadata,
                         streamed_audio_channels=1) as writer:  # fmt: skip
            for item in self.stream(chunks, options):
                writer.append_audio(item.audio)
                writer.write(item.image)
                generated += item.generated
                count += 1
                if count == 1:
                    first = time.perf_counter() - start
                bar.update()
        bar.close()
        seconds = time.perf_counter() - start
        logger.info("wrote %s: %d streamed frames, %.2f frames/s", output, count, count / max(seconds, 1e-9))
        return GenerationResult(output, count, count / FPS, generated, seconds, first)

    def generate(
        self, audio: str | Path | np.ndarray, output: str | Path, options: GenerateOptions | None = None
    ) -> GenerationResult:
        """Drive the source set by :meth:`set_source` with ``audio`` and write ``output`` (MP4, atomically).

        Args:
            audio: a file in any common format/rate/channel count (written to the output at its own rate
                and channel count), or 16 kHz mono float32 samples.
            output: the ``.mp4`` to write (with the fitted audio, the watermark and provenance tags); a
                folder gets ``<source>_<audio>.mp4`` and a name without extension ``.mp4``
                (:func:`resolve_output_path`).
            options: see :class:`GenerateOptions`.
        """
        from difftalk.io.watermark import embed_watermark, provenance_tags

        options = options or self._source_options or GenerateOptions()
        start = time.perf_counter()
        track = self.track()
        output = resolve_output_path(output, track.path, audio)
        driving = prepare_driving_audio(audio, track, self.feature_backend, options)
        sound, rate = (driving.samples, SAMPLE_RATE)
        if driving.original is not None:
            sound, rate = driving.original.samples, driving.original.sample_rate
        metadata = provenance_tags(
            self.model_name, self.provenance(options), payload=WATERMARK_PAYLOAD if options.watermark else None
        )
        generated, first = 0, float("nan")
        bar = tqdm(total=driving.num_frames, desc=self.method, unit="frame", disable=not options.progress)
        with VideoWriter(output, fps=FPS, audio=sound, sample_rate=rate, crf=options.crf, metadata=metadata) as writer:
            for index, (frame, was_generated) in enumerate(self.iter_frames(driving, options)):
                writer.write(embed_watermark(frame, WATERMARK_PAYLOAD) if options.watermark else frame)
                generated += was_generated
                if index == 0:
                    first = time.perf_counter() - start
                bar.update()
        bar.close()
        seconds = time.perf_counter() - start
        num_frames = driving.num_frames
        logger.info(
            "wrote %s: %d frames (%.2f s), %d generated, %.2f frames/s",
            output,
            num_frames,
            num_frames / FPS,
            generated,
            num_frames / max(seconds, 1e-9),
        )
        return GenerationResult(output, num_frames, num_frames / FPS, generated, seconds, first)
