"""Face analysis (stage ②) on the real face in ``skimage.data.astronaut()``: detection, landmarks,
crop consistency, streaming and offline main-face tracking, smoothing, missing-dependency errors."""

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
from difftalk.preprocess.face import (
    Face,
    FaceAnalyzer,
    FaceTracker,
    box_iou,
    stack_track,
    track_main_face,
)
from difftalk.preprocess.landmarks import CHIN, LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE

HAS_DLIB = (
    importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models") is not None
)
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="needs the difftalk[face] extra (dlib)")
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


def two_face_frame(image: np.ndarray, dx: int = 0) -> np.ndarray:
    """A 1.3× head on the left and a smaller (1×) copy on the right, shifted by ``dx``."""
    head = image[0:300, 60:380]
    canvas = np.full((420, 640, 3), 120, np.uint8)
    big = cv2.resize(head, None, fx=1.3, fy=1.3)[:420, : 320 - dx]
    canvas[: big.shape[0], dx : dx + big.shape[1]] = big
    canvas[60:360, 320:640] = head
    return canvas


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
    # Frame 3: the main face is missed by the detector; frame 5: the other face is (falsely) bigger.
    per_frame[3] = [f for f in per_frame[3] if f.box[0] > 300]
    small = next(f for f in per_frame[5] if f.box[0] > 300)
    x0, y0, x1, y1 = small.box
    enlarged = Face(np.array([x0 - 60, y0 - 60, x1 + 60, y1 + 60], np.float32), 3.0, small.landmarks)
    per_frame[5] = [f if f is not small else enlarged for f in per_frame[5]]
    frame_size = (frames[0].shape[0], frames[0].shape[1])
    assert max(per_frame[5], key=lambda f: face_module._prominence(f.box, frame_size)) is enlarged

    track = track_main_face(per_frame, frame_size=frame_size)
    assert track[3] is None  # never the other person, even for one frame
    for i, face in enumerate(track):
        if i != 3:
            assert face is not None and box_iou(face.box, main_boxes[i]) > 0.9, i
    arrays = stack_track(track)
    assert arrays.found.tolist() == [i != 3 for i in range(8)]
    assert np.isnan(arrays.crop_boxes[3]).all() and np.isfinite(arrays.crop_boxes[[0, 4]]).all()

    # The streaming tracker also stays on the main face, though the other face scores higher.
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
    offline = track_main_face([analyzer.analyze(astronaut), [], analyzer.analyze(astronaut)])
    assert offline[1] is None and offline[0] is not None and offline[2] is not None
    assert track_main_face([[], []]) == [None, None]
    # Filling the gap of the track gives finite crop boxes everywhere.
    assert np.isfinite(smoothing.smooth_boxes(stack_track(track).crop_boxes)).all()
