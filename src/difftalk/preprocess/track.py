"""One face track per video: landmarks per frame → smoothed square crop boxes (stages ② and ⑥).

:func:`track_face` is the single implementation used by training-data preprocessing
(:mod:`difftalk.preprocess.run`) and by inference (:func:`difftalk.pipeline.source.analyze_source`), so a
reference at inference is cropped exactly as a training clip is. Per frame it takes the 68 landmarks
either from the synthetic benchmark's ground truth (``../ground_truth/<stem>/landmarks.npy``, exact, not
smoothed) or from the streaming dlib tracker (:class:`~difftalk.preprocess.face.FaceTracker`, smoothed by
:func:`~difftalk.preprocess.smoothing.smooth_landmark_track`); the crop box of every frame with a face is
:func:`~difftalk.preprocess.crop.crop_box` of those landmarks, and the box track is gap-filled and smoothed
by :func:`~difftalk.preprocess.smoothing.smooth_boxes` over :func:`box_smoothing_window` frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm.auto import tqdm

from difftalk.io.video import iter_frames
from difftalk.preprocess.crop import crop_box
from difftalk.preprocess.face import FaceAnalyzer, FaceTracker
from difftalk.preprocess.landmarks import NUM_LANDMARKS
from difftalk.preprocess.smoothing import smooth_boxes, smooth_landmark_track

logger = logging.getLogger(__name__)

LandmarkSource = Literal["auto", "ground_truth", "detector"]
"""Where landmarks come from: ``auto`` = the synthetic ground truth when present, else the detector."""
Detector = Literal["hog", "cnn"]
"""The dlib face detector (:class:`~difftalk.preprocess.face.FaceAnalyzer`)."""
NO_FACE_HINT = "use a video or photo where one face is clearly visible, roughly frontal and at least ~100 px wide"


class NoFaceError(ValueError):
    """The video or photo shows no usable face."""


@dataclass(frozen=True, eq=False)
class FaceTrack:
    """The face of one video (or photo), frame by frame, in the pixels of the frames that were tracked."""

    landmarks: np.ndarray
    """``(N, 68, 2)`` float32 ``(x, y)`` frame pixels; frames without a face are interpolated."""
    boxes: np.ndarray
    """``(N, 4)`` float32 smoothed square crop boxes ``x0, y0, x1, y1`` in frame pixels (may extend past the frame)."""
    found: np.ndarray
    """``(N,)`` bool: a face was found in the frame."""
    landmark_source: Literal["ground_truth", "hog", "cnn"]
    """``ground_truth`` (synthetic benchmark) or the dlib detector that found the faces."""

    @property
    def num_frames(self) -> int:
        return len(self.found)


def ground_truth_dir(video: Path) -> Path | None:
    """The synthetic benchmark's ground-truth folder of ``video`` (``../ground_truth/<stem>/``), if there is one."""
    folder = video.parent.parent / "ground_truth" / video.stem
    return folder if (folder / "landmarks.npy").is_file() else None


def box_smoothing_window(fps: float) -> int:
    """An odd Savitzky–Golay length of about 0.36 s (9 frames at 25 fps)."""
    return max(3, round(0.36 * fps) | 1)


def downscale_frame(image: np.ndarray, scale: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 resized by ``scale`` (area interpolation); returned as is when ``scale >= 1``."""
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _detected_landmarks(
    frames: Iterable[np.ndarray], analyzer: FaceAnalyzer, name: str, progress: bool
) -> list[np.ndarray | None]:
    """The streaming tracker over ``frames``: per frame ``(68, 2)`` landmarks, or None without a face."""
    tracker = FaceTracker(analyzer)
    points: list[np.ndarray | None] = []
    for index, frame in enumerate(tqdm(frames, desc="tracking face", unit="frame", disable=not progress)):
        if index == 0 and len(analyzer.detect(frame)) > 1:
            logger.warning("%s shows several faces: following the most prominent one", name)
        face = tracker.update(frame)
        points.append(None if face is None else face.landmarks)
    return points


def _video_frames(video: Path, fps: float, scale: float, max_frames: int | None) -> Iterator[np.ndarray]:
    for index, frame in enumerate(iter_frames(video, fps)):
        if max_frames is not None and index >= max_frames:
            return
        yield downscale_frame(frame, scale)


def track_face(
    source: str | Path | np.ndarray,
    fps: float = 25.0,
    *,
    landmarks: LandmarkSource = "auto",
    detector: Detector = "hog",
    scale: float = 1.0,
    max_frames: int | None = None,
    progress: bool = False,
) -> FaceTrack:
    """Track the main face of a video (or photo) and cut one smoothed square crop box per frame.

    Args:
        source: a video file (read at ``fps``), or a photo as a ``(H, W, 3)`` uint8 RGB array (one frame;
            if no face is found it is searched again at full resolution, upsampled: a small face in a
            large photo).
        fps: frame rate the video is read at; also sets the box smoothing length (:func:`box_smoothing_window`).
        landmarks: ``auto``: the synthetic benchmark's ground truth when ``source`` is one of its videos,
            else the detector; ``ground_truth``: require it; ``detector``: always the detector.
        detector: dlib face detector, ``hog`` (fast) or ``cnn`` (MMOD, more pose-robust, much slower).
        scale: frames (and ground-truth landmarks) are downscaled by this factor first, in (0, 1].
        max_frames: only the first frames (None = all).
        progress: show a tqdm bar over the frames while detecting.

    Returns:
        A :class:`FaceTrack` in the pixels of the (downscaled) frames.

    Raises:
        ValueError: ``landmarks="ground_truth"`` but the video has no ground truth, or a bad argument.
        NoFaceError: no face in any frame.
        MissingExtraError: the detector is needed but dlib is not installed.
    """
    if landmarks not in ("auto", "ground_truth", "detector"):
        raise ValueError(f"landmarks must be 'auto', 'ground_truth' or 'detector', got {landmarks!r}")
    if detector not in ("hog", "cnn"):
        raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    still = source if isinstance(source, np.ndarray) else None
    video = None if isinstance(source, np.ndarray) else Path(source)
    name = "the photo" if video is None else str(video)
    truth = ground_truth_dir(video) if video is not None and landmarks != "detector" else None
    if landmarks == "ground_truth" and truth is None:
        raise ValueError(
            f"{name}: landmarks 'ground_truth' needs ../ground_truth/<name>/landmarks.npy beside the videos folder "
            "(the synthetic benchmark's layout); use 'auto' or 'detector' for other videos"
        )
    if truth is not None:
        ground_truth = np.load(truth / "landmarks.npy").astype(np.float32) * np.float32(scale)
        points: list[np.ndarray | None] = list(ground_truth[:max_frames])
        source_name: Literal["ground_truth", "hog", "cnn"] = "ground_truth"
    elif still is not None:
        frame = downscale_frame(still, scale)
        points = _detected_landmarks([frame], FaceAnalyzer(detector=detector), name, progress=False)
        if points[0] is None:
            thorough = FaceAnalyzer(detector=detector, detect_max_side=max(80, *frame.shape[:2]), upsample=1)
            points = _detected_landmarks([frame], thorough, name, progress=False)
        source_name = detector
    else:
        assert video is not None
        frames = _video_frames(video, fps, scale, max_frames)
        points = _detected_landmarks(frames, FaceAnalyzer(detector=detector), name, progress)
        source_name = detector
    found = np.array([p is not None for p in points], dtype=bool)
    if not found.any():
        raise NoFaceError(f"no face found in {name} (any of its {len(points)} frames); {NO_FACE_HINT}")
    if found.mean() < 0.5:
        logger.warning("%s: a face was found in only %d of %d frames", name, found.sum(), len(found))
    raw = np.stack([p if p is not None else np.full((NUM_LANDMARKS, 2), np.nan, np.float32) for p in points])
    # Ground truth is exact: only detected landmarks are smoothed (mouth points stay raw either way).
    smoothed = raw if truth is not None else smooth_landmark_track(raw)
    raw_boxes = np.full((len(points), 4), np.nan, np.float32)
    raw_boxes[found] = np.stack([crop_box(p) for p in smoothed[found]])
    boxes = smooth_boxes(raw_boxes, window=box_smoothing_window(fps))
    return FaceTrack(
        landmarks=smooth_landmark_track(smoothed, window=1),  # fill the frames without a face
        boxes=boxes,
        found=found,
        landmark_source=source_name,
    )
