"""Metric functions on hand-made inputs: ground truth scores perfect, degraded inputs score worse."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from difftalk.data.masks import mouth_box
from difftalk.metrics.articulation import ArticulationProbe, ProbeConfig, articulation_error, mouth_patch
from difftalk.metrics.image import ImageQuality, psnr, ssim
from difftalk.metrics.lpips import CHANNELS, load_lpips
from difftalk.metrics.sync import mfcc, offset_search, shift_audio
from difftalk.metrics.temporal import JitterAccumulator, save_heat_maps, temporal_jitter
from tests.fakes import draw_face, face_landmarks
from tests.helpers import needs_dlib

SIZE = 96


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks run fastest single-threaded


def _talking(frames: int = 24) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cartoon faces whose mouth opens and closes, with their landmarks."""
    landmarks = [face_landmarks(SIZE, 0.5 + 0.5 * math.sin(i / 2.0)) for i in range(frames)]
    return [draw_face(SIZE, p, (200, 160, 130)) for p in landmarks], landmarks


def test_psnr_ssim_perfect_for_identical_and_worse_for_noise() -> None:
    frames, _ = _talking(2)
    rng = np.random.default_rng(0)
    noisy = np.clip(frames[0] + rng.normal(0, 8, frames[0].shape), 0, 255).astype(np.uint8)
    assert psnr(frames[0], frames[0]) == math.inf
    assert ssim(frames[0], frames[0]) == pytest.approx(1.0)
    assert 25 < psnr(noisy, frames[0]) < 40
    assert ssim(noisy, frames[0]) < 0.9
    # Known value: a constant offset of 5 levels has MSE 25.
    assert psnr(frames[0] // 2 + 5, frames[0] // 2) == pytest.approx(10 * math.log10(255**2 / 25))
    with pytest.raises(ValueError, match="one shape"):
        psnr(frames[0], frames[0][:10])


def test_image_quality_whole_and_mouth_region() -> None:
    frames, landmarks = _talking(6)
    boxes = [mouth_box(p, SIZE) for p in landmarks]
    perfect = ImageQuality()
    perfect.add(frames, frames, boxes)
    means = perfect.means()
    assert means["psnr"] == math.inf and means["psnr_mouth"] == math.inf
    assert means["ssim"] == pytest.approx(1.0) and means["ssim_mouth"] == pytest.approx(1.0)
    assert means["lpips"] is None  # no LPIPS model: reported as unavailable, not faked
    # A wrong mouth (frames reversed) changes the mouth region far more than the whole crop.
    wrong = ImageQuality()
    wrong.add(frames[::-1], frames, boxes)
    worse = wrong.means()
    assert worse["psnr"] < 40 and worse["ssim"] < 1
    assert worse["psnr_mouth"] < worse["psnr"] and worse["ssim_mouth"] < worse["ssim"]


def test_lpips_path_with_weight_files(tmp_path) -> None:
    """The LPIPS code path with weight files in the real formats (random values: plumbing only)."""
    generator = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    backbone = {}
    for index, shape in shapes.items():
        backbone[f"features.{index}.weight"] = torch.randn(shape, generator=generator) * 0.05
        backbone[f"features.{index}.bias"] = torch.zeros(shape[0])
    backbone["classifier.1.weight"] = torch.zeros(4, 4)
    torch.save(backbone, tmp_path / "alexnet-owt-test.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for i, c in enumerate(CHANNELS)}
    torch.save(heads, tmp_path / "alex.pth")
    model = load_lpips(tmp_path)
    assert model is not None
    frames, landmarks = _talking(3)
    quality = ImageQuality(model)
    quality.add(frames, frames, [mouth_box(p, SIZE) for p in landmarks])
    assert quality.means()["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert quality.means()["lpips_mouth"] == pytest.approx(0.0, abs=1e-6)
    different = ImageQuality(model)
    different.add(frames[::-1], frames, [mouth_box(p, SIZE) for p in landmarks])
    assert different.means()["lpips_mouth"] > 0


def test_temporal_jitter_and_heat_map(tmp_path) -> None:
    frames, landmarks = _talking(24)
    boxes = [mouth_box(p, SIZE) for p in landmarks]
    assert temporal_jitter([frames[0]] * 5, boxes[:5]) == 0.0
    assert temporal_jitter(frames[:1], boxes[:1]) is None
    smooth = temporal_jitter(frames, boxes)
    order = np.random.default_rng(0).permutation(len(frames))
    shuffled = temporal_jitter([frames[i] for i in order], boxes)
    assert smooth is not None and shuffled is not None and shuffled > 1.5 * smooth
    # Streaming in windows gives the same numbers as one call.
    accumulator = JitterAccumulator()
    for begin in range(0, len(frames), 5):
        accumulator.add(frames[begin : begin + 5], boxes[begin : begin + 5])
    assert accumulator.jitter == pytest.approx(smooth)
    heat = accumulator.heat_map
    assert heat is not None and heat.shape == (SIZE, SIZE)
    top, bottom, left, right = boxes[0]
    assert heat[top:bottom, left:right].mean() > heat[: SIZE // 4].mean()  # the mouth moves, the brow does not
    path = save_heat_maps(tmp_path / "heat.png", [heat, heat], ["generated", "ground truth"], scale=2)
    from difftalk.io.image import read_image

    assert read_image(path).shape == (2 * SIZE, 2 * (2 * SIZE) + 2, 3)


def test_articulation_error_and_probe_shapes() -> None:
    t = np.linspace(0, 4 * np.pi, 50)
    truth = np.stack([0.5 + 0.5 * np.sin(t + k) for k in range(5)], axis=1).astype(np.float32)
    perfect = articulation_error(truth, truth)
    assert perfect.mae == 0.0 and perfect.jaw_corr == pytest.approx(1.0)
    shifted = articulation_error(np.roll(truth, 6, axis=0), truth)
    assert shifted.mae > 0.1 and shifted.jaw_corr is not None and shifted.jaw_corr < 0.5
    assert set(shifted.as_dict()) >= {"articulation_mae", "articulation_mae_jaw_open", "jaw_corr"}
    assert articulation_error(np.full_like(truth, 0.5), truth).jaw_corr is None  # constant prediction
    frames, landmarks = _talking(2)
    config = ProbeConfig(height=16, width=24, channels=(4, 8))
    patch = mouth_patch(frames[0], landmarks[0], config)
    assert patch.shape == (16, 24, 3) and patch.dtype == np.uint8
    probe = ArticulationProbe(config).eval()
    with torch.no_grad():
        out = probe(torch.zeros(3, 3, 16, 24))
    assert out.shape == (3, 5) and float(out.min()) >= 0 and float(out.max()) <= 1


@needs_dlib  # LMD's landmarks
def test_lmd_zero_for_identical_and_larger_for_other_mouths() -> None:
    from difftalk.metrics.landmarks import LandmarkDistance, MouthLandmarker

    size = 128
    points = [face_landmarks(size, opening) for opening in (0.0, 1.0, 0.0, 1.0)]
    frames = [draw_face(size, p, (200, 160, 130)) for p in points]
    distance = LandmarkDistance(MouthLandmarker())
    distance.add(frames, frames, points)
    assert distance.means() == {"lmd": 0.0, "lmd_px": 0.0}
    swapped = LandmarkDistance(MouthLandmarker())
    swapped.add(frames[1:] + frames[:1], frames, points)  # closed ↔ open mouths
    means = swapped.means()
    assert means["lmd"] is not None and means["lmd_px"] is not None
    assert means["lmd"] > 0.01 and means["lmd_px"] > 0.5


def test_mfcc_matches_python_speech_features() -> None:
    t = np.arange(1200) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1900 * t) * np.linspace(0, 1, 1200)
    features = mfcc(audio)
    assert features.shape == (13, 6)  # 1 + ceil((1200 - 400) / 160) steps
    # python_speech_features 0.6: mfcc(audio * 32768, 16000)[3]
    expected = [19.9769, 21.9535, -13.8917, 3.2398, 7.0851, -42.6458, -52.8692, 1.5206, 21.6358, -5.6835]
    expected += [4.5872, 37.0619, 21.3229]
    np.testing.assert_allclose(features[:, 3], expected, atol=2e-3)
    assert mfcc(np.zeros(100)).shape == (13, 1)
    if importlib.util.find_spec("python_speech_features") is not None:
        import python_speech_features

        reference = python_speech_features.mfcc(audio * 32768, 16000).T
        np.testing.assert_allclose(features, reference, atol=1e-3)


def test_offset_search_finds_the_shift() -> None:
    rng = np.random.default_rng(0)
    visual = torch.from_numpy(rng.normal(size=(60, 16)))
    visual = visual / visual.norm(dim=1, keepdim=True)
    aligned = offset_search(visual, visual.clone(), vshift=15)
    assert aligned.offset == 0 and aligned.lse_d == pytest.approx(aligned.lse_d_at_0)
    assert aligned.lse_d < 0.01 and aligned.lse_c > 1.0 and aligned.distances.shape == (31,)
    # Audio lagging the video by 4 frames: the window of frame i is found at audio window i + 4.
    lagging = torch.cat([torch.zeros(4, 16, dtype=visual.dtype), visual[:-4]])
    score = offset_search(visual, lagging, vshift=15)
    assert score.offset == -4
    assert score.lse_d_at_0 > score.lse_d + 1.0 and score.lse_c_at_0 < 0 < score.lse_c
    with pytest.raises(ValueError, match="both be"):
        offset_search(visual, visual[:10])


def test_shift_audio() -> None:
    audio = np.arange(1, 6401, dtype=np.float32)
    delayed = shift_audio(audio, 2)
    assert delayed.shape == audio.shape and not delayed[:1280].any() and delayed[1280] == 1
    advanced = shift_audio(audio, -2)
    assert advanced[0] == 1281 and not advanced[-1280:].any()
    assert not shift_audio(audio, 20).any()
