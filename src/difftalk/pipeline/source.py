"""The source of a generation run: the video to dub or the photo to animate (stage ⑥).

:func:`analyze_source` streams the source once (25 fps) and keeps only small per-frame arrays:
the tracked 68-point landmarks, the smoothed crop boxes and whether a face was found, all from
:func:`~difftalk.preprocess.track.track_face`, the function that cut the training crops. Frames are
fetched again by index when needed (:class:`SourceFrames`), so memory does not grow with length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from difftalk.io.image import read_image
from difftalk.io.video import MAX_PIXELS, FrameReader, VideoError, is_image_file, iter_frames, probe_video
from difftalk.preprocess.track import Detector, LandmarkSource, downscale_frame, track_face

logger = logging.getLogger(__name__)


@dataclass
class SourceTrack:
    """What the analysis pass learned about the source video or photo."""

    path: Path
    is_image: bool
    num_frames: int
    frame_size: tuple[int, int]
    """(height, width) of the frames used for output (after any downscale)."""
    scale: float
    """Downscale factor applied to the source frames (1.0 = none)."""
    landmarks: np.ndarray
    """``(N, 68, 2)`` float32 frame pixels; frames without a face are interpolated."""
    boxes: np.ndarray
    """``(N, 4)`` smoothed square crop boxes in frame pixels."""
    found: np.ndarray
    """``(N,)`` bool: a face was found in the frame (else the frame is passed through untouched)."""
    landmark_source: str
    """``ground_truth`` (synthetic benchmark), or the dlib detector: ``hog`` or ``cnn`` (as in a clip's meta.json)."""
    still: np.ndarray | None = None
    """The photo (downscaled) when ``is_image``; a video's frames are read again by index instead."""


def _scale_for(height: int, width: int, max_side: int) -> float:
    return min(1.0, max_side / max(height, width))


class SourceFrames:
    """Frames of the source by index (a photo gives the same frame for every index)."""

    def __init__(self, track: SourceTrack, fps: float) -> None:
        self.track = track
        self._image: np.ndarray | None = None
        self._reader: FrameReader | None = None
        if track.is_image:
            assert track.still is not None
            self._image = track.still
        else:
            self._reader = FrameReader(track.path, fps)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._image is not None:
            return self._image
        assert self._reader is not None
        return downscale_frame(self._reader[index], self.track.scale)


def analyze_source(
    path: str | Path,
    fps: float = 25.0,
    landmarks: LandmarkSource = "auto",
    max_side: int = 2048,
    progress: bool = True,
    detector: Detector = "hog",
) -> SourceTrack:
    """Analyse the source video or photo once (streaming; see the module docstring).

    Args:
        path: a video or photo.
        fps: frame rate the video is read at.
        landmarks: ``auto`` / ``ground_truth`` / ``detector`` (:func:`~difftalk.preprocess.track.track_face`).
        max_side: frames whose longer side exceeds this are downscaled first.
        progress: show a progress bar while tracking.
        detector: dlib face detector, ``hog`` or ``cnn`` (as ``difftalk preprocess --detector``).

    Raises:
        FileNotFoundError: the file does not exist.
        VideoError: the file is not a readable video/image, or has no video stream.
        NoFaceError: no face in any frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source video or photo {path} does not exist")
    if is_image_file(path):
        image = read_image(path)
        if image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise VideoError(f"{path}: {image.shape[1]}x{image.shape[0]} pixels is too large; downscale it first")
        scale = _scale_for(image.shape[0], image.shape[1], max_side)
        if scale < 1.0:
            logger.info("source image %dx%d downscaled by %.3f", image.shape[1], image.shape[0], scale)
        is_image, size, still = True, image.shape[:2], image
    else:
        info = probe_video(path)
        scale = _scale_for(info.height, info.width, max_side)
        is_image, size, still = False, (info.height, info.width), None
        if info.num_frames <= 1:
            # A one-frame video is a photo.
            is_image, still = True, next(iter_frames(path))
    size = (round(size[0] * scale), round(size[1] * scale))
    face = track_face(
        still if still is not None else path,
        fps,
        landmarks=landmarks,
        detector=detector,
        scale=scale,
        progress=progress,
    )
    return SourceTrack(
        path=path,
        is_image=is_image,
        num_frames=face.num_frames,
        frame_size=(int(size[0]), int(size[1])),
        scale=scale,
        landmarks=face.landmarks,
        boxes=face.boxes,
        found=face.found,
        landmark_source=face.landmark_source,
        still=downscale_frame(still, scale) if still is not None else None,
    )


def source_indices(num_source: int, num_output: int, loop: str = "pingpong") -> np.ndarray:
    """Source frame index for each output frame: ``0 … n-1`` then forwards-backwards or from the start.

    A longer source is trimmed (its first ``num_output`` frames).
    """
    if num_source <= 0:
        raise ValueError("the source video has no frames")
    t = np.arange(num_output)
    if num_source == 1:
        return np.zeros(num_output, dtype=np.int64)
    if loop == "loop":
        return t % num_source
    if loop == "pingpong":
        period = 2 * num_source - 2
        phase = t % period
        return np.where(phase < num_source, phase, period - phase).astype(np.int64)
    raise ValueError(f"unknown loop mode {loop!r}; use pingpong or loop")


# Names of earlier versions, when "reference" meant the dubbed video too.
ReferenceTrack = SourceTrack
ReferenceFrames = SourceFrames
analyze_reference = analyze_source
