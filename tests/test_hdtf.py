"""The HDTF recipe offline: published-list parsing, download commands, cutting annotated clips."""

from __future__ import annotations

import numpy as np

from difftalk.io.video import VideoWriter, probe_video, read_frames
from difftalk.preprocess.hdtf import cut_clips, download_commands, read_segments, read_urls


def _annotations(folder):
    folder.mkdir()
    (folder / "WDA_video_url.txt").write_text("JaneDoe0 https://www.youtube.com/watch?v=abc\nJohnRoe https://x/y\n")
    (folder / "WDA_annotion_time.txt").write_text("JaneDoe0.mp4 00:00-00:01 00:02-00:03\nJohnRoe.mp4 00:01-00:02\n")
    return folder


def test_lists_and_commands(tmp_path):
    annotations = _annotations(tmp_path / "HDTF_dataset")
    assert read_urls(annotations) == {
        "WDA_JaneDoe0": "https://www.youtube.com/watch?v=abc",
        "WDA_JohnRoe": "https://x/y",
    }
    segments = read_segments(annotations)
    assert [(s.clip_name, s.start, s.end) for s in segments] == [
        ("WDA_JaneDoe0_0", 0.0, 1.0),
        ("WDA_JaneDoe0_1", 2.0, 3.0),
        ("WDA_JohnRoe_0", 1.0, 2.0),
    ]
    commands = download_commands(annotations, tmp_path / "raw")
    assert commands[0][0] == "yt-dlp" and commands[0][-1] == "https://www.youtube.com/watch?v=abc"
    assert str(tmp_path / "raw" / "WDA_JaneDoe0.mp4") in commands[0]


def test_cut_clips_keeps_time_and_skips_missing_videos(tmp_path):
    annotations = _annotations(tmp_path / "HDTF_dataset")
    raw = tmp_path / "raw"
    t = np.arange(4 * 16000) / 16000
    with VideoWriter(
        raw / "WDA_JaneDoe0.mp4", fps=30, audio=(0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    ) as writer:
        for i in range(120):  # 4 s at 30 fps; the frame's grey level encodes its time
            writer.write(np.full((64, 64, 3), int(i / 30 * 60), np.uint8))
    written = cut_clips(annotations, raw, tmp_path / "clips", progress=False)
    assert sorted(p.name for p in written) == ["WDA_JaneDoe0_0.mp4", "WDA_JaneDoe0_1.mp4"]  # JohnRoe not downloaded
    second = tmp_path / "clips" / "WDA_JaneDoe0_1.mp4"
    info = probe_video(second)
    assert info.fps == 25 and info.num_frames == 25 and info.has_audio
    assert abs(int(read_frames(second)[0, 0, 0, 0]) - 120) <= 3  # starts at 2 s
    assert cut_clips(annotations, raw, tmp_path / "clips", progress=False) == written  # resumable
