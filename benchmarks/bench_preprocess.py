"""Preprocessing speed on a 720p talking-face video at 256² crops (target: faster than real time on 2 cores).

Makes a 1280×720, 25 fps video of a real face (scikit-image's astronaut, moving slowly inside the
frame) with synthetic speech as its audio, then times ``difftalk preprocess`` with the real detector path
(dlib HOG + 68 landmarks + tracking, 256² crops, mel features): one video with one worker, and two
videos with two workers (throughput). Writes benchmarks/results/preprocess.{json,md}.

    python -m benchmarks.bench_preprocess [--seconds 20]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from benchmarks.common import write_results
from difftalk.io.video import VideoWriter
from difftalk.preprocess.run import PreprocessOptions, run_preprocess
from difftalk.synth import sample_articulation, synthesize_speech
from difftalk.synth.generate import identity_for


def make_720p_video(path: Path, seconds: float, index: int) -> None:
    """scikit-image's astronaut (face ≈ 135 px) moving slowly inside a 1280×720 frame, with synthetic speech."""
    frames = int(seconds * 25)
    rng = np.random.default_rng(index)
    identity = identity_for(1000 + index, 0)
    audio = synthesize_speech(sample_articulation(rng, frames, identity.speaking_rate), identity, rng)
    face = cv2.resize(data.astronaut()[0:400, 50:450], (600, 600), interpolation=cv2.INTER_CUBIC)
    with VideoWriter(path, fps=25, audio=audio) as writer:
        for i in range(frames):
            canvas = np.full((720, 1280, 3), 70, np.uint8)
            x, y = 340 + int(60 * np.sin(i / 40)), 60 + int(10 * np.cos(i / 25))
            canvas[y : y + 600, x : x + 600] = face
            writer.write(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each test video")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        videos = work / "videos"
        for index in range(2):
            make_720p_video(videos / f"talker{index}.mp4", args.seconds, index)
        rows = []
        for workers, count in ((1, 1), (2, 2)):
            subset = work / f"subset{workers}"
            subset.mkdir()
            for index in range(count):
                shutil.copy(videos / f"talker{index}.mp4", subset / f"talker{index}.mp4")
            options = PreprocessOptions(crop_sizes=(256,), features=("mel",), landmarks="detector", workers=workers)
            start = time.perf_counter()
            report = run_preprocess(subset, work / f"data{workers}", options, progress=False)
            wall = time.perf_counter() - start
            assert not report.failed, report.failed
            video_seconds = args.seconds * count
            rows.append(
                {
                    "videos": count,
                    "workers": workers,
                    "video_seconds": video_seconds,
                    "wall_seconds": round(wall, 2),
                    "realtime_factor": round(video_seconds / wall, 2),
                    "ms_per_frame": round(1000 * wall / (video_seconds * 25), 1),
                    "faces_found": sum(c.faces for c in report.clips),
                }
            )
        lines = [
            "# Preprocessing speed (720p real-face input, 256² crops, dlib HOG + 68 landmarks + tracking, mel)",
            "",
            "`python -m benchmarks.bench_preprocess` — realtime factor = seconds of video per second of wall time.",
            "",
            "| videos | workers | video s | wall s | realtime factor | ms / frame | faces found |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['videos']} | {r['workers']} | {r['video_seconds']:.0f} | {r['wall_seconds']} | "
            f"{r['realtime_factor']}× | {r['ms_per_frame']} | {r['faces_found']} |"
            for r in rows
        ]
        path = write_results("preprocess", {"rows": rows}, "\n".join(lines), out_dir=args.out)
        print(path.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
