"""Face analysis (stage ②) on the real face in ``skimage.data.astronaut()``: detection, landmarks,
crop consistency, streaming main-face tracking, smoothing, missing-dependency errors (whole-video
tracks: tests/test_track.py)."""

from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from difftalk.preprocess import face as face_module
from difftalk.preprocess import smoothing
from difftalk.preprocess.crop import crop_box, crop_image, crop_to_frame, frame_to_crop
from difftalk.preprocess.face import FaceAnalyzer, FaceTracker, box_iou
from difftalk.preprocess.landmarks import CHIN, LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE
from tests.fakes import two_face_frame
from tests.helpers import needs_dlib

ASTRONAUT_BOX = np.array([175, 76, 265, 166], dtype=np.float32)


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def moving_frame(image: np.ndarray, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """The image scaled and translated onto a grey 480×640 canvas."""
    matrix = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (640, 480), flags=cv2.INTER_LINEAR, borderValue=(120, 120, 120))


def test_missing_dependency_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ImportError, match=r"difftalk\[face\].*non-commercial"):
        FaceAnalyzer()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        face_module.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "face_recognition_models" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match=r"face-recognition-models.*difftalk\[face\]"):
        face_module.default_models_dir()


@needs_dlib
def test_bad_inputs(analyzer: FaceAnalyzer) -> None:
    with pytest.raises(ValueError, match="uint8"):
        analyzer.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="detector"):
        FaceAnalyzer(detector="mtcnn")  # type: ignore[arg-type]


@needs_dlib
def test_detects_astronaut_face(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    detections = analyzer.detect(astronaut)
    assert len(detections) == 1
    box = detections[0].box
    assert box.dtype == np.float32 and box.shape == (4,)
    assert np.abs(box - ASTRONAUT_BOX).max() < 10
    assert box_iou(box, ASTRONAUT_BOX) > 0.75
    assert detections[0].score > 0.5
    # Downscaled detection maps the box back to frame pixels.
    big = cv2.resize(astronaut, (1024, 1024))
    small_box = FaceAnalyzer(detect_max_side=512).detect(big)[0].box
    assert box_iou(small_box / 2, box) > 0.8


@needs_dlib
def test_landmarks_are_plausible(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    faces = analyzer.analyze(astronaut)
    assert len(faces) == 1
    points = faces[0].landmarks
    assert points.shape == (68, 2) and points.dtype == np.float32
    x0, y0, x1, y1 = faces[0].box
    margin = 0.3 * (x1 - x0)
    assert (points[:, 0] > x0 - margin).all() and (points[:, 0] < x1 + margin).all()
    assert (points[:, 1] > y0 - margin).all() and (points[:, 1] < y1 + margin).all()
    right_eye, left_eye = points[list(RIGHT_EYE)].mean(0), points[list(LEFT_EYE)].mean(0)
    mouth = points[list(MOUTH)].mean(0)
    assert max(right_eye[1], left_eye[1]) < points[NOSE_TIP, 1] < mouth[1] < points[CHIN, 1]
    # The subject's right eye is on the image's left; jaw and mouth corners in the same order.
    assert right_eye[0] < points[NOSE_TIP, 0] < left_eye[0]
    assert points[0, 0] < points[8, 0] < points[16, 0] and points[48, 0] < points[54, 0]
    assert 25 < left_eye[0] - right_eye[0] < 60  # interocular distance of a ~90 px face


@needs_dlib
def test_landmarks_map_consistently_into_the_crop(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    face = analyzer.analyze(astronaut)[0]
    box = crop_box(face.landmarks)
    size = 256
    crop = crop_image(astronaut, box, size)
    in_crop = frame_to_crop(face.landmarks, box, size)
    assert (in_crop > 0).all() and (in_crop < size).all()  # the whole face is inside the crop
    np.testing.assert_allclose(crop_to_frame(in_crop, box, size), face.landmarks, atol=1e-3)
    # Analysing the crop itself finds the same face and the same points (up to dlib's pixel rounding).
    crop_faces = analyzer.analyze(crop)
    assert len(crop_faces) == 1
    assert box_iou(crop_faces[0].box, frame_to_crop(face.box.reshape(2, 2), box, size).reshape(4)) > 0.6
    error = np.linalg.norm(crop_faces[0].landmarks - in_crop, axis=1)
    assert error.mean() < 4.0, error.mean()


@needs_dlib
@pytest.mark.parametrize("mode", ["local", "refit"])
def test_tracker_follows_known_motion(analyzer: FaceAnalyzer, astronaut: np.ndarray, mode: str) -> None:
    reference = crop_box(analyzer.analyze(astronaut)[0].landmarks)
    tracker = FaceTracker(analyzer, mode=mode, redetect_every=5)  # type: ignore[arg-type]
    errors = []
    for t in range(20):
        scale, shift = 1.0 + 0.012 * t, (150.0 + 5 * t, 40.0 - 2.5 * t)
        face = tracker.update(moving_frame(astronaut, scale, shift))
        assert face is not None
        expected = reference * scale + np.array([shift[0], shift[1], shift[0], shift[1]])
        errors.append(np.abs(crop_box(face.landmarks) - expected))
    errors_px = np.array(errors)
    assert errors_px.mean() < 2.0 and errors_px.max() < 5.0, (errors_px.mean(), errors_px.max())
    if mode == "local":
        assert tracker.counts["full"] == 1 and tracker.counts["local"] == 19
    else:
        assert tracker.counts["full"] == 4 and tracker.counts["refit"] == 16


def test_smooth_boxes_reduces_jitter_and_fills_gaps() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(60, dtype=np.float64)
    cx, cy, side = 300 + 40 * np.sin(t / 15), 200 + 2 * t, 150 + 10 * np.cos(t / 20)
    truth = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)
    noisy = truth + rng.normal(0, 3.0, truth.shape)
    noisy[20:23] = np.nan
    smoothed = smoothing.smooth_boxes(noisy)
    assert smoothed.shape == (60, 4) and np.isfinite(smoothed).all()
    valid = np.isfinite(noisy).all(1)
    noisy_error = np.sqrt(((noisy[valid] - truth[valid]) ** 2).mean())
    smooth_error = np.sqrt(((smoothed - truth) ** 2).mean())
    assert smooth_error < 0.65 * noisy_error, (smooth_error, noisy_error)
    assert np.abs(smoothed[20:23] - truth[20:23]).max() < 5.0  # the gap is filled near the truth

    def jitter(boxes: np.ndarray) -> float:
        return float(np.nanmean(np.abs(np.diff(boxes, n=2, axis=0))))

    assert jitter(smoothed) < 0.3 * jitter(noisy)
    # Square boxes stay square; long gaps can be kept open.
    square = truth.copy()
    square[:, 3] = square[:, 1] + (square[:, 2] - square[:, 0])
    out = smoothing.smooth_boxes(square)
    np.testing.assert_allclose(out[:, 2] - out[:, 0], out[:, 3] - out[:, 1], atol=1e-3)
    gappy = truth.copy()
    gappy[10:30] = np.nan
    assert np.isnan(smoothing.smooth_boxes(gappy, max_gap=5)[10:30]).all()
    assert np.isnan(smoothing.smooth_boxes(np.full((4, 4), np.nan))).all()


def test_smooth_landmarks_keeps_mouth_raw() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(50, 200, (1, 68, 2))
    t = np.arange(40)[:, None, None]
    truth = base + np.concatenate([np.sin(t / 6.0) * 5, t * 0.5], axis=2)
    noisy = truth + rng.normal(0, 1.5, truth.shape)
    noisy[10] = np.nan
    out = smoothing.smooth_landmark_track(noisy)
    assert out.shape == (40, 68, 2) and np.isfinite(out).all()
    mouth = list(smoothing.MOUTH_POINTS)
    rest = [i for i in range(68) if i not in smoothing.MOUTH_POINTS]
    keep = np.arange(40) != 10
    np.testing.assert_allclose(out[keep][:, mouth], noisy[keep][:, mouth], atol=1e-3)  # mouth left raw
    assert np.abs(out[keep][:, rest] - truth[keep][:, rest]).mean() < 0.85 * np.abs(noisy - truth)[keep][:, rest].mean()
    assert np.abs(out[10] - truth[10]).mean() < 3.0  # filled by interpolation


@needs_dlib
def test_main_face_chosen_among_two(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    frames = [two_face_frame(astronaut, dx=4 * i) for i in range(8)]
    per_frame = [analyzer.analyze(frame) for frame in frames]
    assert all(len(faces) == 2 for faces in per_frame)
    main_boxes = [max(faces, key=lambda f: f.box[2] - f.box[0]).box for faces in per_frame]
    # The streaming tracker stays on the main (bigger, more central) face, though the other face scores higher.
    assert max(per_frame[0], key=lambda f: f.score).box[0] > 300
    tracker = FaceTracker(analyzer)
    for frame, main_box in zip(frames, main_boxes, strict=True):
        face = tracker.update(frame)
        assert face is not None and box_iou(face.box, main_box) > 0.5


@needs_dlib
def test_frames_without_face_give_none(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    blank = np.full_like(astronaut, 128)
    shuffled = rng.permutation(astronaut.reshape(-1, 3)).reshape(astronaut.shape)
    assert analyzer.detect(blank) == [] and analyzer.detect(shuffled) == []
    tracker = FaceTracker(analyzer)
    track = [tracker.update(frame) for frame in (astronaut, shuffled, astronaut, blank, blank, astronaut)]
    assert [face is None for face in track] == [False, True, False, True, True, False]
    boxes = [face.box for face in track if face is not None]
    assert all(box_iou(box, boxes[0]) > 0.9 for box in boxes)
    assert tracker.counts["missed"] == 3
    # Filling the gaps of the track gives finite crop boxes everywhere.
    crop_boxes = np.array([crop_box(f.landmarks) if f is not None else np.full(4, np.nan) for f in track])
    assert np.isfinite(smoothing.smooth_boxes(crop_boxes)).all()
