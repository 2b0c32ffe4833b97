"""The one face track (stage ② and ⑥): :func:`track_face` on the synthetic benchmark's ground truth and on
real-face video (dlib), and preprocessing and inference cutting the same crop boxes from the same video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from difftalk.data.clips import Clip
from difftalk.io.video import VideoWriter
from difftalk.pipeline.source import analyze_source
from difftalk.preprocess.crop import crop_box
from difftalk.preprocess.face import FaceAnalyzer
from difftalk.preprocess.run import PreprocessOptions, run_preprocess
from difftalk.preprocess.smoothing import smooth_boxes
from difftalk.preprocess.track import NoFaceError, box_smoothing_window, track_face
from difftalk.synth.generate import run_synth
from tests.fakes import astronaut_video, two_face_frame
from tests.helpers import needs_dlib


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 1 s synthetic clip at 64² with its ground truth (``videos/`` + ``ground_truth/``)."""
    root = tmp_path_factory.mktemp("synth")
    run_synth(root, identities=1, seconds=1.0, size=64, seed=3, progress=False)
    (video,) = sorted((root / "videos").glob("*.mp4"))
    return video


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    with VideoWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def test_ground_truth_track_is_exact_and_scales(synth_video: Path) -> None:
    truth = np.load(synth_video.parent.parent / "ground_truth" / synth_video.stem / "landmarks.npy")
    track = track_face(synth_video, 25.0)
    assert track.landmark_source == "ground_truth" and track.found.all() and track.num_frames == len(truth)
    np.testing.assert_allclose(track.landmarks, truth, atol=1e-4)  # exact: not smoothed
    expected = smooth_boxes(np.stack([crop_box(p) for p in truth.astype(np.float32)]), window=box_smoothing_window(25))
    np.testing.assert_allclose(track.boxes, expected, atol=1e-3)
    half = track_face(synth_video, 25.0, landmarks="ground_truth", scale=0.5, max_frames=10)
    assert half.num_frames == 10
    np.testing.assert_allclose(half.landmarks, truth[:10] * 0.5, atol=1e-4)
    np.testing.assert_allclose(half.boxes, track_face(synth_video, max_frames=10).boxes * 0.5, atol=1e-2)


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    video = write_video(tmp_path / "videos" / "grey.mp4", [np.full((64, 64, 3), 120, np.uint8)] * 3)
    with pytest.raises(ValueError, match=r"ground_truth/<name>/landmarks.npy.*'auto' or 'detector'"):
        track_face(video, landmarks="ground_truth")
    with pytest.raises(ValueError, match="detector must be"):
        track_face(video, detector="mtcnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        track_face(video, scale=0.0)


@needs_dlib
def test_detector_track_follows_the_main_face_and_fills_gaps(tmp_path: Path) -> None:
    astronaut = data.astronaut()
    frames = [two_face_frame(astronaut, dx=4 * i) for i in range(8)]
    frames[3] = np.full_like(frames[0], 120)  # no face: filled from the neighbours
    track = track_face(write_video(tmp_path / "two.mp4", frames), 25.0)
    assert track.landmark_source == "hog"
    assert track.found.tolist() == [i != 3 for i in range(8)]
    assert np.isfinite(track.boxes).all() and np.isfinite(track.landmarks).all()
    analyzer = FaceAnalyzer()
    for i in (0, 4, 7):
        main = max(analyzer.analyze(frames[i]), key=lambda f: f.box[2] - f.box[0])
        assert np.abs(track.boxes[i] - crop_box(main.landmarks)).max() < 8, i  # the big face, not the other
    assert track.boxes[2, 0] < track.boxes[3, 0] < track.boxes[4, 0]  # the gap is bridged


@needs_dlib
def test_photo_and_faceless_video(tmp_path: Path) -> None:
    astronaut = data.astronaut()
    photo = track_face(astronaut)
    assert photo.num_frames == 1 and photo.found.all() and photo.landmark_source == "hog"
    # A small face in a large photo is found by the second, full-resolution search.
    large = np.full((1400, 1400, 3), 120, np.uint8)
    large[500:900, 500:900] = astronaut[0:400, 50:450]
    assert not FaceAnalyzer().detect(large)
    small = track_face(large)
    assert small.found.all() and 500 < small.boxes[0, 0] < small.boxes[0, 2] < 900
    astronaut_video(tmp_path / "noise.mp4", seconds=0.4, faceless=True)
    with pytest.raises(NoFaceError, match="no face found"):
        track_face(tmp_path / "noise.mp4")


def _preprocessed(video: Path, data_dir: Path, options: PreprocessOptions) -> tuple[np.ndarray, str]:
    report = run_preprocess(video.parent, data_dir, options, progress=False)
    assert [c.status for c in report.clips] == ["done"], report.clips
    clip = Clip.open(data_dir / "clips" / video.stem)
    meta = json.loads((clip.path / "meta.json").read_text())
    return np.asarray(clip.boxes), meta["landmark_source"]


def test_preprocessing_and_inference_cut_the_same_crops_ground_truth(synth_video: Path, tmp_path: Path) -> None:
    boxes, source = _preprocessed(synth_video, tmp_path / "data", PreprocessOptions(crop_sizes=(64,), workers=1))
    reference = analyze_source(synth_video, 25.0, progress=False)
    assert source == reference.landmark_source == "ground_truth"
    assert boxes.shape == reference.boxes.shape
    np.testing.assert_allclose(reference.boxes, boxes, atol=1e-4)


@needs_dlib
def test_preprocessing_and_inference_cut_the_same_crops_detector(tmp_path: Path) -> None:
    video = tmp_path / "videos" / "astronaut_01.mp4"
    astronaut_video(video, seconds=0.8)
    options = PreprocessOptions(crop_sizes=(64,), workers=1, landmarks="detector", detector="hog")
    boxes, source = _preprocessed(video, tmp_path / "data", options)
    reference = analyze_source(video, 25.0, landmarks="detector", detector="hog", progress=False)
    assert source == reference.landmark_source == "hog"
    assert reference.found.all() and boxes.shape == reference.boxes.shape
    np.testing.assert_allclose(reference.boxes, boxes, atol=1e-4)
