"""``evaluate_results`` on results folders made from the ground-truth videos: the copies score best, shuffled
and shifted frames and mismatched audio score clearly worse, and the report files are complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difftalk.data.clips import open_clips
from difftalk.eval.evaluate import evaluate_results
from difftalk.io.video import VideoWriter, read_frames
from difftalk.metrics.articulation import ProbeConfig
from tests.helpers import single_thread
from tests.test_syncnet import SyncSetup, synthetic_sync_setup

PROBE = ProbeConfig(steps=300, max_samples=2000)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks run fastest single-threaded


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SyncSetup:
    return synthetic_sync_setup(tmp_path_factory)


def _write(path: Path, frames: np.ndarray) -> str:
    with VideoWriter(path, fps=25.0) as writer:
        for frame in frames:
            writer.write(frame)
    return f"videos/{path.name}"


def _results(root: Path, setup: SyncSetup, variant: str) -> Path:
    """A results folder whose "generated" videos are the source videos, copied or with their frames altered."""
    folder = root / variant
    (folder / "videos").mkdir(parents=True)
    clips = sorted(open_clips(setup.data_dir), key=lambda c: c.split != "test")[:2]
    entries: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for clip in clips:
        source = setup.synth_dir / "videos" / f"{clip.name}.mp4"
        if variant == "truth":
            shutil.copy(source, folder / "videos" / source.name)
            entries.append({"name": clip.name, "video": f"videos/{source.name}", "audio_clip": clip.name})
            entries[-1].update(start_frame=0, num_frames=clip.num_frames)
            continue
        frames = read_frames(source)
        if variant == "shuffled":
            segment, start = frames[rng.permutation(len(frames))], 0
        elif variant == "shifted":  # output frame i shows clip frame i + 3: the audio lags by 3 frames
            segment, start = np.concatenate([frames[3:], frames[-1:].repeat(3, 0)]), 0
        else:  # "segment": an exact segment re-encoded, frames 20 … 119
            segment, start = frames[20:120], 20
        video = _write(folder / "videos" / source.name, segment)
        entries.append({"name": clip.name, "video": video, "audio_clip": clip.name, "start_frame": start})
        entries[-1]["num_frames"] = len(segment)
    if variant == "truth":  # plus a cross-driven entry: clip 0's video with clip 1's audio
        entries.append({**entries[0], "audio_clip": clips[1].name})
    results = {"format": "difftalk-results", "version": 1, "data": str(setup.data_dir), "method": variant}
    (folder / "results.json").write_text(json.dumps({**results, "clips": entries}))
    return folder


@pytest.fixture(scope="module")
def reports(setup: SyncSetup, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("results")
    cache = root / "probe_cache"
    out = {}
    with single_thread():
        for variant in ("truth", "segment", "shuffled", "shifted"):
            folder = _results(root, setup, variant)
            out[variant] = evaluate_results(
                folder,
                setup.data_dir,
                setup.expert_dir,
                probe_cache_dir=cache,
                probe_config=PROBE,
                window=16,
                progress=False,
            )
    return out


@pytest.mark.slow
def test_ground_truth_scores_best(reports: dict[str, dict[str, Any]]) -> None:
    truth = reports["truth"]["summary"]["self_driven"]
    segment = reports["segment"]["summary"]["self_driven"]
    shuffled = reports["shuffled"]["summary"]["self_driven"]
    shifted = reports["shifted"]["summary"]["self_driven"]
    for good in (truth, segment):
        assert good["psnr"] > 33 and good["ssim"] > 0.95 and good["psnr_mouth"] > 33
        assert good["av_offset"] == 0 and good["jaw_corr"] > 0.7
        assert 0.8 < good["jitter_ratio"] < 1.25
        assert good["articulation_mae"] < good["articulation_mae_gt"] + 0.02
    for bad in (shuffled, shifted):
        assert bad["psnr"] < truth["psnr"] - 3 and bad["ssim"] < truth["ssim"]
        assert bad["psnr_mouth"] < truth["psnr_mouth"] - 5
        assert bad["lmd"] > truth["lmd"] + 0.01
        assert bad["articulation_mae"] > truth["articulation_mae"] + 0.02 and bad["jaw_corr"] < truth["jaw_corr"]
        assert bad["lse_d_at_0"] > truth["lse_d_at_0"] + 0.05 and bad["lse_c_at_0"] < truth["lse_c_at_0"] - 0.05
    assert shuffled["lse_c"] < 0.5 * truth["lse_c"] and shuffled["lse_d"] > truth["lse_d"]
    assert shuffled["jitter_ratio"] > 2.0
    assert -4 <= shifted["av_offset"] <= -2  # the expert finds the 3-frame lag
    assert truth["lmd"] < 0.05 and truth["lse_c"] == pytest.approx(truth["lse_c_gt"], abs=0.05)
    assert truth["lpips"] is None and "lpips" in reports["truth"]["unavailable"]


@pytest.mark.slow
def test_cross_driven_uses_the_driving_audio(reports: dict[str, dict[str, Any]]) -> None:
    summary = reports["truth"]["summary"]
    cross, own = summary["cross_driven"], summary["self_driven"]
    assert cross["num_clips"] == 1 and "psnr" not in cross and "lmd" not in cross
    assert cross["lse_c"] < 0.5 * own["lse_c"] and cross["lse_d"] > own["lse_d"]
    assert cross["articulation_mae"] > own["articulation_mae"] + 0.02
    modes = [c["mode"] for c in reports["truth"]["clips"]]
    assert modes == ["self", "self", "cross"]


@pytest.mark.slow
def test_audio_dependence_control_catches_a_mouth_that_follows_the_source(reports: dict[str, dict[str, Any]]) -> None:
    """The cross-driven entry is the source video itself (a mouth that ignores the driving audio): against
    the driving clip it scores low, against its own source clip as well as the real thing — the control's
    ``*_source`` scores expose it (a model that follows the driving audio shows the reverse)."""
    summary = reports["truth"]["summary"]
    cross, own = summary["cross_driven"], summary["self_driven"]
    assert cross["lse_c_source"] == pytest.approx(reports["truth"]["clips"][0]["metrics"]["lse_c"], abs=1e-6)
    assert cross["lse_c_source"] > 2 * cross["lse_c"]
    assert cross["jaw_corr_source"] > 0.7 and cross["jaw_corr_source"] > cross["jaw_corr"] + 0.4
    assert cross["articulation_mae_source"] < cross["articulation_mae"] - 0.02
    assert "jaw_corr_source" not in own and "lse_c_source" not in own


@pytest.mark.slow
def test_report_files(reports: dict[str, dict[str, Any]]) -> None:
    folder = Path(reports["segment"]["results_dir"])
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["format"] == "difftalk-metrics" and len(stored["clips"]) == 2
    assert stored["clips"][0]["start_frame"] == 20 and stored["clips"][0]["num_frames"] == 100
    assert stored["summary"]["self_driven"]["num_frames"] == 200
    truth = json.loads((Path(reports["truth"]["results_dir"]) / "metrics.json").read_text())
    assert truth["syncnet"] is not None and "lse" not in truth["unavailable"]
    markdown = (folder / "metrics.md").read_text()
    assert "| group | clips | frames | PSNR ↑ |" in markdown and "| self_driven | 2 | 200 |" in markdown
    assert "LSE-C ↑" in markdown and "**lpips**" in markdown
    for clip in stored["clips"]:
        assert (folder / clip["heat_map"]).is_file()


@pytest.mark.slow
def test_bad_results_folders_are_clear_errors(setup: SyncSetup, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"results\.json"):
        evaluate_results(tmp_path, setup.data_dir)
    clip = open_clips(setup.data_dir)[0]
    (tmp_path / "videos").mkdir()
    video = _write(tmp_path / "videos" / "small.mp4", np.zeros((6, 32, 32, 3), np.uint8))
    entry = {"name": clip.name, "video": video, "audio_clip": clip.name, "start_frame": 0, "num_frames": 6}
    options: dict[str, Any] = {"landmarks": False, "articulation": False, "progress": False}
    for bad, message in (
        ({**entry, "audio_clip": "nobody"}, "not in the dataset"),
        ({**entry, "num_frames": 10_000}, "outside"),
        (entry, "source geometry"),
    ):
        (tmp_path / "results.json").write_text(json.dumps({"format": "difftalk-results", "clips": [bad]}))
        with pytest.raises(ValueError, match=message):
            evaluate_results(tmp_path, setup.data_dir, **options)
