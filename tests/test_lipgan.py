"""The LipGAN baseline: generator shapes and checkpoints, the window dataset and expert input, a tiny training
run that learns, checkpoints and resumes exactly, and generation through the DiffTalk crop / paste-back path."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difftalk.checkpoint import CheckpointError
from difftalk.data.masks import mouth_mask
from difftalk.io.audio import load_audio
from difftalk.io.video import probe_video, read_frames
from difftalk.io.watermark import read_provenance, verify_file
from difftalk.metrics.sync import prepare_frames
from difftalk.models.lipgan import LipGANConfig, LipGANGenerator, expert_input
from difftalk.models.syncnet import SyncNet, syncnet_preset
from difftalk.pipeline import GenerateOptions
from difftalk.pipeline.lipgan import LipGANPipeline, generate_lipgan
from difftalk.preprocess.crop import frame_to_crop
from difftalk.train.lipgan import LipGANTrainConfig, LipGANWindowDataset, collate_windows, train_lipgan
from tests.fakes import astronaut_video
from tests.helpers import needs_dlib

TINY = LipGANConfig(image_size=64, channels=(8, 16, 16), audio_channels=(8, 16), audio_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks run fastest single-threaded


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight small SyncNet standing in for the trained expert."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("expert") / "syncnet"
    SyncNet(syncnet_preset("small")).save_pretrained(path)
    return path


def _inputs(config: LipGANConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    frames = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    reference = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    audio = torch.randn(batch, config.context_frames, config.window, config.feature_dim, generator=generator)
    return frames, reference, audio


def test_generator_shapes_checkpoint_round_trip_and_config_checks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for config in (TINY, replace(TINY, image_size=32, context_frames=3, feature_dim=29)):
        model = LipGANGenerator(config).eval()
        masked, reference, audio = _inputs(config, 2)
        with torch.no_grad():
            out = model(masked, reference, audio)
            single = model(masked[:1], reference[:1], audio[:1])
        assert out.shape == masked.shape and out.abs().max() <= 1
        torch.testing.assert_close(single, out[:1], atol=1e-5, rtol=0)  # batch-independent (GroupNorm)
        with torch.no_grad():
            other_audio = model(masked, reference, torch.randn_like(audio))
        assert not torch.allclose(other_audio, out)  # the audio reaches the output
    model = LipGANGenerator(TINY).eval()
    masked, reference, audio = _inputs(TINY, 2, seed=1)
    model.save_pretrained(tmp_path / "gen", extra={"feature_backend": "mel"})
    loaded = LipGANGenerator.from_pretrained(tmp_path / "gen")
    with torch.no_grad():
        assert torch.equal(model(masked, reference, audio), loaded(masked, reference, audio))
    assert loaded.config == TINY
    SyncNet(syncnet_preset("small")).save_pretrained(tmp_path / "sync")
    with pytest.raises(CheckpointError, match="SyncNet"):
        LipGANGenerator.from_pretrained(tmp_path / "sync")
    with pytest.raises(ValueError, match="audio_features"):
        model(masked, reference, audio[:, :, :8])
    with pytest.raises(ValueError, match="image_size"):
        LipGANConfig(image_size=62, channels=(8, 16, 16))
    with pytest.raises(ValueError, match="context_frames"):
        LipGANConfig(context_frames=2)


def test_expert_input_matches_the_metric_preprocessing() -> None:
    rng = np.random.default_rng(0)
    small = syncnet_preset("small")
    for config, side in ((small, 128), (replace(small, color="bgr255"), 40)):  # shrink (area) / enlarge (bilinear)
        crops = rng.integers(0, 256, (5, side, side, 3), dtype=np.uint8)
        frames = torch.from_numpy(crops).float().div(127.5).sub(1).permute(0, 3, 1, 2)[None]  # (1, 5, 3, S, S)
        expected = prepare_frames(crops, config).transpose(0, 1)[None]  # (1, 3, 5, h, w)
        got = expert_input(frames, config)
        assert got.shape == expected.shape
        scale = 255.0 if config.color == "bgr255" else 2.0
        assert (got - expected).abs().mean() < 0.01 * scale  # same up to uint8 rounding of the resize


def test_window_dataset_gives_consecutive_frames_with_their_mfcc(prepared_dataset: Path) -> None:
    config = LipGANTrainConfig(model=TINY, reference_min_distance=10)
    dataset = LipGANWindowDataset(prepared_dataset, config, with_mfcc=True)
    sample = dataset[0]
    assert sample.target_frames.shape == (5, 3, 64, 64) and sample.mouth_masks.shape == (5, 1, 64, 64)
    assert sample.audio_features.shape == (5, 1, 16, 80) and sample.mfcc is not None
    assert sample.mfcc.shape == (1, 13, 20)
    assert torch.equal(sample.reference_frames[0], sample.reference_frames[4])  # one reference per window
    masked = sample.mouth_masks.bool().expand_as(sample.masked_frames)
    assert (sample.masked_frames[masked] == -1).all()
    # Frame 3 of the first clip has no face: no window contains it.
    starts = np.array([dataset.windows.locate(i)[1] for i in range(len(dataset)) if dataset.windows.locate(i)[0] == 0])
    assert not np.any((starts <= 3) & (starts + 5 > 3))
    batch = collate_windows([dataset[0], dataset[1]])
    assert batch.target_frames.shape == (2, 5, 3, 64, 64) and batch.mfcc is not None


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row.get("l1")]


@pytest.mark.slow
def test_training_learns_checkpoints_and_resumes_exactly(
    prepared_dataset: Path, expert_dir: Path, tmp_path: Path
) -> None:
    config = LipGANTrainConfig(
        model=TINY,
        syncnet=str(expert_dir),
        reference_min_distance=10,
        steps=24,
        batch_size=3,
        learning_rate=3e-3,
        adversarial_weight=0.05,
        sync_weight=0.05,
        num_workers=0,
        accelerator="cpu",
        log_every=1,
        checkpoint_every=8,
        eval_every=0,
        eval_windows=3,
        data_dir=str(prepared_dataset),
        run_dir=str(tmp_path / "a"),
    )
    result = train_lipgan(config, progress=False)
    assert result.step == 24 and result.sync_enabled
    rows = _rows(tmp_path / "a")
    l1 = [float(r["l1"]) for r in rows]
    assert np.mean(l1[-4:]) < 0.7 * np.mean(l1[:4]), l1
    assert all(np.isfinite(float(r["sync"])) and np.isfinite(float(r["discriminator"])) for r in rows)
    assert (result.model_dir / "weights.safetensors").is_file()
    assert (tmp_path / "a" / "checkpoints" / "training_state.pt").is_file()
    assert list((tmp_path / "a" / "samples").glob("*.png"))
    assert set(result.validation) == {"l1", "l1_mouth", "sync_generated", "sync_real"}

    # 16 steps, then resume to 24: the same weights as the uninterrupted run.
    train_lipgan(replace(config, steps=16, run_dir=str(tmp_path / "b")), progress=False)
    resumed = train_lipgan(replace(config, run_dir=str(tmp_path / "b")), progress=False)
    assert resumed.step == 24 and [int(r["step"]) for r in _rows(tmp_path / "b")] == list(range(1, 25))
    a = LipGANGenerator.from_pretrained(result.model_dir).state_dict()
    b = LipGANGenerator.from_pretrained(resumed.model_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Without an expert the sync term is off (NaN in metrics.csv), and the GAN is optional.
    plain = replace(config, syncnet=None, adversarial_weight=0.0, steps=2, eval_windows=0, run_dir=str(tmp_path / "c"))
    off = train_lipgan(plain, progress=False)
    assert not off.sync_enabled and all(np.isnan(float(r["sync"])) for r in _rows(tmp_path / "c"))


@pytest.fixture(scope="module")
def lipgan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lipgan") / "lipgan"
    LipGANGenerator(TINY).save_pretrained(path, extra={"feature_backend": "mel"})
    return path


@needs_dlib
@pytest.mark.slow
def test_generate_lipgan_writes_a_dubbed_mp4_and_keeps_pixels_outside_the_mouth(
    lipgan_dir: Path, tmp_path: Path
) -> None:
    astronaut_video(tmp_path / "face.mp4", seconds=1.0)
    t = np.arange(int(1.7 * 16000)) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    options = GenerateOptions(progress=False)
    result = generate_lipgan(lipgan_dir, tmp_path / "face.mp4", speech, tmp_path / "out.mp4", options)
    info = probe_video(result.output)
    assert info.has_audio and (info.width, info.height) == (640, 480)
    assert info.num_frames == result.num_frames == round(1.7 * 25) == result.generated_frames
    assert abs(len(load_audio(result.output)) / 16000 - 1.7) < 0.1
    verified = verify_file(result.output)
    assert verified.watermark.found and verified.provenance is not None
    provenance = read_provenance(result.output)
    assert provenance is not None and provenance["method"] == "lipgan"

    # Before encoding: every changed pixel lies inside the mouth region of its frame.
    pipe = LipGANPipeline.from_pretrained(lipgan_dir)
    track = pipe.set_source(tmp_path / "face.mp4", options)
    driving = pipe.prepare_audio(speech, options)
    source = read_frames(tmp_path / "face.mp4", fps=25)
    size = TINY.image_size
    for t, (frame, generated) in enumerate(pipe.iter_frames(driving, options)):
        index = int(driving.source_index[t])
        box = track.boxes[index]
        changed = np.any(frame != source[index], axis=2)
        hard = mouth_mask(frame_to_crop(track.landmarks[index], box, size), size)
        scale = (box[2] - box[0]) / size
        inverse = cv2.warpAffine(hard, np.array([[scale, 0, box[0]], [0, scale, box[1]]]), (640, 480))
        assert generated and changed.any() and np.all(inverse[changed] > 0), t
