"""The diffusion trainer's expert sync loss and fine-tuning start: window samples, where the loss reaches, a run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from difftalk.checkpoint import read_checkpoint_meta, weights_sha256
from difftalk.config import ConfigError, load_config, replace
from difftalk.data.batch import collate_samples
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.io.audio import load_audio
from difftalk.metrics.sync import mfcc, mfcc_windows
from difftalk.models.difftalk import DiffTalkModel
from difftalk.models.syncnet import SyncNet, syncnet_preset
from difftalk.train.common import STATE_NAME, load_state
from difftalk.train.diffusion import expert_sync_loss, train_diffusion
from difftalk.train.windows import FrameWindows, flatten_windows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight small SyncNet (5-frame windows) standing in for a trained expert."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("expert") / "syncnet"
    SyncNet(syncnet_preset("small")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DiffTalk checkpoint with a latent scale of its own, to fine-tune from."""
    torch.manual_seed(1)
    config = replace(load_config("tiny").model, {"latent_scale": 2.5})
    path = tmp_path_factory.mktemp("start") / "model"
    DiffTalkModel(config).save_pretrained(path, feature_backend="mel", sampler_steps=3)
    return path


def _frames(data_dir: Path) -> TalkingHeadDataset:
    config = load_config("tiny").model
    return TalkingHeadDataset(
        data_dir, image_size=config.autoencoder.image_size, context_frames=config.audio_encoder.context_frames, seed=3
    )


def test_windows_are_consecutive_frames_of_one_clip_with_one_reference_and_their_mfcc(prepared_dataset):
    frames = _frames(prepared_dataset)
    windows = FrameWindows(frames, 5, seed=3, with_mfcc=True)
    # every 5-frame window with a face in each (frame 3 of every clip has none) whose 20 MFCC steps fit the audio
    expected = 0
    for clip in frames.clips:
        last = min(clip.num_frames - 5, (mfcc(load_audio(clip.path / "audio.wav")).shape[1] - 20) // 4)
        expected += sum(1 for s in range(last + 1) if 3 not in range(s, s + 5))
    assert len(windows) == expected > 0
    index = len(windows) - 1
    clip_index, start = windows.locate(index)
    sample = windows[index]
    assert sample.frame_index.tolist() == list(range(start, start + 5))
    assert set(sample.clip_index.tolist()) == {clip_index} and len(set(sample.reference_index.tolist())) == 1
    assert sample.target_frames is not None and sample.target_frames.shape[0] == 5
    single = frames.make_sample(clip_index, start + 2, int(sample.reference_index[0]))
    assert torch.equal(sample.target_frames[2], single.target_frames)
    assert torch.equal(sample.audio_features[2], single.audio_features)
    coefficients = mfcc(load_audio(frames.clips[clip_index].path / "audio.wav"))
    assert sample.mfcc is not None and torch.equal(sample.mfcc, mfcc_windows(coefficients, [start], 5)[0])
    # the same window and epoch give the same reference; batches flatten window-major
    assert torch.equal(windows[index].reference_index, sample.reference_index)
    flat = flatten_windows(collate_samples([windows[0], sample]))
    assert flat.frame_index.tolist()[5:] == list(range(start, start + 5)) and flat.landmarks.shape[0] == 10
    assert flat.mfcc is not None and flat.mfcc.shape == (2, 1, 13, 20)


def test_sync_loss_reaches_the_mouth_of_the_picked_windows_only(expert_dir):
    model = DiffTalkModel(load_config("tiny").model).eval()
    expert = SyncNet.from_pretrained(expert_dir).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(10, 3, 16, 16, generator=generator)
    predicted = torch.randn(10, 3, 16, 16, generator=generator).requires_grad_(True)
    mask = torch.zeros(10, 1, 16, 16)
    mask[..., 9:14, 4:12] = 1
    mfcc_batch = torch.randn(2, 1, 13, 20, generator=generator)
    loss = expert_sync_loss(model, expert, predicted, clean, mask, mfcc_batch, torch.tensor([False, True]))
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    assert predicted.grad is not None
    grad = predicted.grad.abs().sum(1, keepdim=True)
    assert float(grad[:5].sum()) == 0  # window 0 was not picked
    assert float((grad[5:] * (1 - mask[5:])).sum()) == 0  # outside the mouth: the true latents
    assert float((grad[5:] * mask[5:]).sum()) > 0


def test_sync_options_are_checked():
    config = load_config("tiny")
    with pytest.raises(ConfigError, match="syncnet"):
        replace(config, {"train.sync_weight": 0.1})
    with pytest.raises(ConfigError, match="init_from"):
        replace(config, {"train.init_from": "a", "train.autoencoder": "b"})


def _config(data_dir: Path, run_dir: Path, **overrides: object):
    base = {"data.data_dir": str(data_dir), "train.run_dir": str(run_dir), "train.sample_every": 0}
    return replace(load_config("tiny"), {**base, **overrides})


@pytest.mark.slow
def test_sync_loss_fine_tunes_from_a_checkpoint_and_resumes_exactly(
    prepared_dataset, expert_dir, start_checkpoint, tmp_path
):
    sync = {
        "train.init_from": str(start_checkpoint),
        "train.syncnet": str(expert_dir),
        "train.sync_weight": 0.5,
        "train.sync_max_t": 1000,  # every window: the term is in every row
        "train.batch_size": 10,
        "train.log_every": 1,
        "train.checkpoint_every": 100,
        "data.num_workers": 0,
    }
    straight = _config(prepared_dataset, tmp_path / "a", **{**sync, "train.steps": 4})
    result = train_diffusion(straight, progress=False)
    with open(tmp_path / "a" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(np.isfinite(float(r["sync"])) and float(r["sync"]) > 0 for r in rows)
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["init_sha256"] == weights_sha256(start_checkpoint)
    trained = DiffTalkModel.from_pretrained(result.model_dir)
    start = DiffTalkModel.from_pretrained(start_checkpoint)
    assert trained.config == start.config  # the start's model section and latent scale, not the preset's
    assert read_checkpoint_meta(result.model_dir, DiffTalkModel.KIND)["extra"]["sampler_steps"] == 3  # tiny: 10
    assert all(
        torch.equal(a, b)
        for a, b in zip(trained.autoencoder.state_dict().values(), start.autoencoder.state_dict().values(), strict=True)
    )
    # 4 small steps from the start stay near it (a random initialisation would be far away)
    unet_a = torch.cat([p.detach().flatten() for p in trained.unet.parameters()])
    unet_b = torch.cat([p.detach().flatten() for p in start.unet.parameters()])
    assert 0 < float((unet_a - unet_b).abs().max()) < 0.05

    halves = _config(prepared_dataset, tmp_path / "b", **{**sync, "train.steps": 2})
    train_diffusion(halves, progress=False)
    train_diffusion(replace(halves, {"train.steps": 4}), progress=False)
    a = load_state(tmp_path / "a" / "checkpoints" / STATE_NAME)["model"]
    b = load_state(tmp_path / "b" / "checkpoints" / STATE_NAME)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ValueError, match="multiple of the sync expert's 5-frame"):
        train_diffusion(_config(prepared_dataset, tmp_path / "c", **{**sync, "train.batch_size": 8}), progress=False)


def test_latent_cache_skips_clips_another_run_cached_meanwhile(prepared_dataset, tmp_path):
    """Two runs starting on the same data share the work: a clip cached by the other one is not encoded again."""
    import shutil

    from difftalk.data.clips import open_clips
    from difftalk.models.autoencoder import Autoencoder
    from difftalk.train.latent_cache import autoencoder_fingerprint, build_latent_cache

    data = tmp_path / "data"
    shutil.copytree(prepared_dataset, data, ignore=shutil.ignore_patterns("latents"))  # earlier tests cache there
    clips = open_clips(data, "all")
    torch.manual_seed(0)
    autoencoder = Autoencoder(load_config("tiny").model.autoencoder).eval()
    fingerprint = autoencoder_fingerprint(autoencoder)
    other = clips[1].latents_path(fingerprint)
    encoded: list[int] = []
    original = autoencoder.encode

    def encode(frames: torch.Tensor) -> torch.Tensor:
        encoded.append(frames.shape[0])
        if not other.is_file():  # the other run finishes clip 1 while this one encodes clip 0
            other.parent.mkdir(exist_ok=True)
            np.save(other, np.zeros((clips[1].num_frames, 2, 3, 16, 16), np.float16))
        return original(frames)

    autoencoder.encode = encode  # type: ignore[method-assign]
    assert build_latent_cache(clips, autoencoder, progress=False) == fingerprint
    encoded_frames = sum(encoded) // 2  # the frame and its masked version
    assert encoded_frames == sum(len(c.valid_frames) for i, c in enumerate(clips) if i != 1)
    assert not np.load(other).any()  # left as the other run wrote it
    assert all(c.latents_path(fingerprint).is_file() for c in clips)
