"""The reference input of a generation run: a video to dub or a single photo (stage ⑥).

:func:`analyze_reference` streams the reference once (25 fps) and keeps only small per-frame arrays:
the tracked 68-point landmarks, the smoothed crop boxes and whether a face was found. Frames are
fetched again by index when needed (:class:`ReferenceFrames`), so memory does not grow with length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from difftalk.io.image import read_image
from difftalk.io.video import MAX_PIXELS, FrameReader, VideoError, is_image_file, iter_frames, probe_video
from difftalk.preprocess.crop import crop_box
from difftalk.preprocess.run import box_smoothing_window, ground_truth_dir
from difftalk.preprocess.smoothing import smooth_boxes, smooth_landmark_track

logger = logging.getLogger(__name__)

NO_FACE_HINT = "use a video or photo where one face is clearly visible, roughly frontal and at least ~100 px wide"


class NoFaceError(ValueError):
    """The reference shows no usable face."""


@dataclass
class ReferenceTrack:
    """What the analysis pass learned about the reference."""

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
    still: np.ndarray | None = None
    """The photo (downscaled) when ``is_image``; a video's frames are read again by index instead."""


def _downscale(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _scale_for(height: int, width: int, max_side: int) -> float:
    return min(1.0, max_side / max(height, width))


class ReferenceFrames:
    """Frames of the reference by index (a photo gives the same frame for every index)."""

    def __init__(self, track: ReferenceTrack, fps: float) -> None:
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
        return _downscale(self._reader[index], self.track.scale)


def _detect_track(
    frames: list[np.ndarray] | None, path: Path, fps: float, scale: float, progress: bool, thorough: bool = False
) -> list:
    from difftalk.preprocess.face import FaceAnalyzer, FaceTracker

    if thorough and frames is not None:
        side = max(_downscale(frames[0], scale).shape[:2])
        analyzer = FaceAnalyzer(detect_max_side=side, upsample=1)
    else:
        analyzer = FaceAnalyzer()
    tracker = FaceTracker(analyzer)
    source = frames if frames is not None else iter_frames(path, fps)
    track = []
    for index, frame in enumerate(tqdm(source, desc="tracking face", unit="frame", disable=not progress)):
        frame = _downscale(frame, scale)
        if index == 0 and len(analyzer.detect(frame)) > 1:
            logger.warning("%s shows several faces: lip-syncing the most prominent one", path)
        face = tracker.update(frame)
        track.append(None if face is None else face.landmarks)
    return track


def analyze_reference(
    path: str | Path, fps: float = 25.0, landmarks: str = "auto", max_side: int = 2048, progress: bool = True
) -> ReferenceTrack:
    """Analyse the reference video or photo once (streaming; see the module docstring).

    Raises:
        FileNotFoundError: the file does not exist.
        VideoError: the file is not a readable video/image, or has no video stream.
        NoFaceError: no face in any frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference {path} does not exist")
    if is_image_file(path):
        image = read_image(path)
        if image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise VideoError(f"{path}: {image.shape[1]}x{image.shape[0]} pixels is too large; downscale it first")
        scale = _scale_for(image.shape[0], image.shape[1], max_side)
        if scale < 1.0:
            logger.info("reference image %dx%d downscaled by %.3f", image.shape[1], image.shape[0], scale)
        is_image, size, frames = True, image.shape[:2], [image]
    else:
        info = probe_video(path)
        scale = _scale_for(info.height, info.width, max_side)
        is_image, size, frames = False, (info.height, info.width), None
        if info.num_frames <= 1:
            # A one-frame video is a photo.
            single = next(iter_frames(path))
            is_image, frames = True, [single]
    size = (round(size[0] * scale), round(size[1] * scale))
    truth = ground_truth_dir(path) if (landmarks != "detector" and not is_image) else None
    if landmarks == "ground_truth" and truth is None:
        raise ValueError(f"{path}: --landmarks ground_truth needs ../ground_truth/{path.stem}/landmarks.npy")
    if truth is not None:
        gt = np.load(truth / "landmarks.npy").astype(np.float32) * scale
        points: list[np.ndarray | None] = list(gt)
        source = "ground_truth"
    else:
        points = _detect_track(frames, path, fps, scale, progress)
        if is_image and points[0] is None and frames is not None:
            # A small face in a large photo: search the whole image at full resolution, upsampled.
            points = _detect_track(frames, path, fps, scale, progress, thorough=True)
        source = "dlib"
    found = np.array([p is not None for p in points], dtype=bool)
    if not found.any():
        raise NoFaceError(f"no face found in the reference {path}; {NO_FACE_HINT}")
    if found.mean() < 0.5:
        logger.warning("a face was found in only %d of %d reference frames", found.sum(), len(found))
    raw = np.stack([p if p is not None else np.full((68, 2), np.nan, np.float32) for p in points])
    smoothed = raw if truth is not None else smooth_landmark_track(raw)
    raw_boxes = np.full((len(points), 4), np.nan, np.float32)
    raw_boxes[found] = np.stack([crop_box(p) for p in smoothed[found]])
    boxes = smooth_boxes(raw_boxes, window=box_smoothing_window(fps))
    return ReferenceTrack(
        path=path,
        is_image=is_image,
        num_frames=len(points),
        frame_size=(int(size[0]), int(size[1])),
        scale=scale,
        landmarks=smooth_landmark_track(smoothed, window=1),
        boxes=boxes,
        found=found,
        landmark_source=source,
        still=_downscale(frames[0], scale) if is_image and frames is not None else None,
    )


def source_indices(num_source: int, num_output: int, loop: str = "pingpong") -> np.ndarray:
    """Reference frame index for each output frame: ``0 … n-1`` then forwards-backwards or from the start.

    A longer reference is trimmed (its first ``num_output`` frames).
    """
    if num_source <= 0:
        raise ValueError("the reference has no frames")
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
