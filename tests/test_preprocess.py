"""`difftalk preprocess` on real-face video (skimage's astronaut, dlib detector): clip format, resampling,
faceless videos, resumability."""

from __future__ import annotations

import json

import numpy as np
import pytest

from difftalk.data.clips import Clip, load_manifest
from difftalk.io.audio import load_audio
from difftalk.preprocess.manifest import HDTF_IDENTITY_PATTERN, assign_splits, identity_of
from difftalk.preprocess.run import PreprocessOptions, run_preprocess
from tests.fakes import astronaut_video
from tests.helpers import needs_dlib


@needs_dlib
@pytest.mark.slow
def test_preprocess_real_face_video(tmp_path):
    videos = tmp_path / "videos"
    astronaut_video(videos / "astronaut_01.mp4")
    astronaut_video(videos / "noise_01.mp4", faceless=True)
    data_dir = tmp_path / "data"
    options = PreprocessOptions(crop_sizes=(64, 128), workers=1)
    report = run_preprocess(videos, data_dir, options, progress=False)
    status = {c.name: c for c in report.clips}
    assert status["astronaut_01"].status == "done"
    assert status["noise_01"].status == "failed" and "no face" in status["noise_01"].message
    manifest = load_manifest(data_dir)
    assert [c["name"] for c in manifest["clips"]] == ["astronaut_01"]
    clip = Clip.open(data_dir / "clips" / "astronaut_01")
    assert clip.num_frames == 40  # 1.6 s resampled from 30 to 25 fps
    assert clip.landmarks.shape == (40, 68, 2) and clip.face_found.all()
    assert np.asarray(clip.features("mel")).shape == (40, 16, 80)
    assert clip.read_frame(0).shape == (64, 64, 3) and clip.read_frame(5, 128).shape == (128, 128, 3)
    points = np.asarray(clip.landmarks)
    assert points.min() >= 0 and points.max() < 64
    audio = load_audio(clip.path / "audio.wav")
    assert len(audio) == 40 * 640
    boxes = np.asarray(clip.boxes)
    # The face moves 20 px left/right in the source; the crop boxes follow it smoothly.
    assert np.ptp(boxes[:, 0]) > 15 and np.abs(np.diff(boxes[:, 0], 2)).max() < 4
    meta = json.loads((clip.path / "meta.json").read_text())
    assert meta["source_fps"] == pytest.approx(30.0) and meta["landmark_source"] == "hog"
    # Re-running skips the finished clip and retries the failed one.
    again = run_preprocess(videos, data_dir, options, progress=False)
    assert {c.name: c.status for c in again.clips} == {"astronaut_01": "skipped", "noise_01": "failed"}


def test_partial_clips_are_redone_and_bad_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video files"):
        run_preprocess(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_preprocess(tmp_path / "missing", tmp_path / "out", progress=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    (videos / "empty.mp4").write_bytes(b"")
    report = run_preprocess(videos, tmp_path / "out", PreprocessOptions(workers=1), progress=False)
    messages = {c.name: c.message for c in report.clips}
    assert "not a readable video" in messages["broken"] and "empty" in messages["empty"]
    assert not list((tmp_path / "out" / "clips").iterdir())


def test_identity_split_is_by_identity_and_stable():
    names = ["WDA_BarackObama_000", "WDA_BarackObama_001", "RD_Radio1_000", "id0003_c01", "id0003_c02"]
    assert {identity_of(n) for n in names} == {"WDA_BarackObama", "RD_Radio1", "id0003"}
    hdtf = HDTF_IDENTITY_PATTERN
    assert identity_of("WDA_AmyKlobuchar0_0", hdtf) == identity_of("WDA_AmyKlobuchar1_3", hdtf) == "AmyKlobuchar"
    assert identity_of("RD_Radio11_0", hdtf) == identity_of("RD_Radio11_2", hdtf) == "RD_Radio11"
    assert identity_of("RD_Radio12_0", hdtf) == "RD_Radio12"
    identities = [f"person{i}" for i in range(200)]
    split = assign_splits(identities, 0.2, seed=1)
    assert 20 < sum(v == "test" for v in split.values()) < 60
    more = assign_splits([*identities, "newcomer"], 0.2, seed=1)
    assert all(more[k] == v for k, v in split.items())
    assert assign_splits(["a", "b"], 0.5, 0, fixed={"a": "test", "b": "train"}) == {"a": "test", "b": "train"}
