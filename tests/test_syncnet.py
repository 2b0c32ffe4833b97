"""SyncNet expert: the syncnet_v2 loader (strict, public key names), checkpoints, and a small expert trained
on tiny synthetic clips that finds the audio offset and tells matching from mismatched audio."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from difftalk.checkpoint import CheckpointError
from difftalk.data.clips import Clip, open_clips
from difftalk.io.audio import load_audio
from difftalk.metrics.sync import SyncAccumulator, SyncScore, shift_audio
from difftalk.models.syncnet import SyncNet, SyncNetConfig, load_syncnet, load_syncnet_v2, syncnet_preset
from difftalk.preprocess.run import PreprocessOptions, run_preprocess
from difftalk.synth.generate import run_synth
from difftalk.train.syncnet import SyncNetTrainConfig, SyncWindowDataset, train_syncnet
from tests.helpers import single_thread

# The public syncnet_python SyncNetModel.S, written down as data: (index, out, in, kernel) of every conv,
# each followed by a BatchNorm at index + 1; heads Linear(512, 512) · BatchNorm1d · ReLU · Linear(512, 1024).
PUBLIC_LIP = [(0, 96, 3, (5, 7, 7)), (4, 256, 96, (1, 5, 5)), (8, 256, 256, (1, 3, 3)), (11, 256, 256, (1, 3, 3))]
PUBLIC_LIP += [(14, 256, 256, (1, 3, 3)), (18, 512, 256, (1, 6, 6))]
PUBLIC_AUD = [(0, 64, 1, (3, 3)), (4, 192, 64, (3, 3)), (8, 384, 192, (3, 3)), (11, 256, 384, (3, 3))]
PUBLIC_AUD += [(14, 256, 256, (3, 3)), (18, 512, 256, (5, 4))]

TRAIN_STEPS = 400  # 200 left some seeds (and CI's CPU) with an expert that cannot find the offset


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks run fastest single-threaded


def public_syncnet_state(generator: torch.Generator, old_format: bool = True) -> dict[str, torch.Tensor]:
    """A random state dict with syncnet_python's key names and shapes (no num_batches_tracked if old)."""
    state: dict[str, torch.Tensor] = {}

    def norm(prefix: str, channels: int) -> None:
        state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(channels, generator=generator)
        state[f"{prefix}.bias"] = 0.1 * torch.randn(channels, generator=generator)
        state[f"{prefix}.running_mean"] = 0.1 * torch.randn(channels, generator=generator)
        state[f"{prefix}.running_var"] = 1 + torch.rand(channels, generator=generator)
        if not old_format:
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    for stream, layers in (("netcnnlip", PUBLIC_LIP), ("netcnnaud", PUBLIC_AUD)):
        for index, out, inp, kernel in layers:
            fan_in = inp * int(np.prod(kernel))
            state[f"{stream}.{index}.weight"] = torch.randn(out, inp, *kernel, generator=generator) / fan_in**0.5
            state[f"{stream}.{index}.bias"] = 0.01 * torch.randn(out, generator=generator)
            norm(f"{stream}.{index + 1}", out)
    for head in ("netfclip", "netfcaud"):
        state[f"{head}.0.weight"] = torch.randn(512, 512, generator=generator) / 512**0.5
        state[f"{head}.0.bias"] = torch.zeros(512)
        norm(f"{head}.1", 512)
        state[f"{head}.3.weight"] = torch.randn(1024, 512, generator=generator) / 512**0.5
        state[f"{head}.3.bias"] = torch.zeros(1024)
    return state


def test_syncnet_v2_loads_public_state_dict_strictly(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    state = public_syncnet_state(generator)
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    model = load_syncnet_v2(path)
    own = model.state_dict()
    assert torch.equal(own["visual_encoder.0.weight"], state["netcnnlip.0.weight"])
    assert torch.equal(own["audio_head.3.weight"], state["netfcaud.3.weight"])
    assert torch.equal(own["visual_encoder.19.running_var"], state["netcnnlip.19.running_var"])
    assert sum(p.numel() for p in model.parameters()) == 13_631_616
    with torch.no_grad():
        visual = model.embed_frames(torch.rand(2, 3, 5, 224, 224, generator=generator) * 255)
        audio = model.embed_audio(torch.randn(2, 1, 13, 20, generator=generator))
    assert visual.shape == audio.shape == (2, 1024) and torch.isfinite(visual).all()
    assert isinstance(load_syncnet(path), SyncNet)  # a file path goes through the public loader
    # Newer files carry num_batches_tracked: accepted too.
    torch.save(public_syncnet_state(generator, old_format=False), path)
    load_syncnet_v2(path)
    # Unknown, missing and wrongly shaped keys are refused.
    for broken in (
        {**state, "netcnnlip.99.weight": torch.zeros(1)},
        {k: v for k, v in state.items() if k != "netfcaud.3.bias"},
        {**state, "netfclip.3.weight": torch.zeros(512, 512)},
        {f"module.{k}": v for k, v in state.items()},
    ):
        torch.save(broken, path)
        with pytest.raises(CheckpointError):
            load_syncnet_v2(path)


def test_small_syncnet_checkpoint_round_trip(tmp_path: Path) -> None:
    config = syncnet_preset("small")
    model = SyncNet(config).eval()
    frames = torch.randn(3, *config.visual_input_shape)
    mfcc = torch.randn(3, *config.audio_input_shape)
    model.save_pretrained(tmp_path / "expert")
    loaded = load_syncnet(tmp_path / "expert")
    with torch.no_grad():
        assert torch.equal(model.embed_frames(frames), loaded.embed_frames(frames))
        assert torch.equal(model.embed_audio(mfcc), loaded.embed_audio(mfcc))
    assert loaded.config == config
    with pytest.raises(ValueError, match="shrinks"):
        SyncNetConfig(image_size=16)


@dataclass
class SyncSetup:
    """Tiny synthetic benchmark, its prepared dataset and a small expert trained on it."""

    synth_dir: Path
    data_dir: Path
    run_dir: Path
    expert_dir: Path
    validation: dict[str, float]


_SHARED: dict[str, SyncSetup] = {}


def synthetic_sync_setup(factory: pytest.TempPathFactory) -> SyncSetup:
    """Build once per session (shared with test_evaluate): 4 identities × 6 s at 64², expert TRAIN_STEPS steps."""
    if "setup" not in _SHARED:
        with single_thread():
            _SHARED["setup"] = _build_sync_setup(factory.mktemp("sync"))
    return _SHARED["setup"]


def _build_sync_setup(root: Path) -> SyncSetup:
    run_synth(root / "synth", identities=4, seconds=6.0, size=64, seed=1, test_fraction=0.25, progress=False)
    data = root / "data"
    run_preprocess(root / "synth" / "videos", data, PreprocessOptions(crop_sizes=(64,), workers=1), progress=False)
    config = SyncNetTrainConfig(
        steps=TRAIN_STEPS,
        batch_size=16,
        candidates=4,
        learning_rate=2e-3,
        num_workers=0,
        accelerator="cpu",
        eval_every=0,
        eval_clips=1,
        log_every=50,
        checkpoint_every=100,
        data_dir=str(data),
        run_dir=str(root / "run"),
    )
    result = train_syncnet(config, resume=False, progress=False)
    return SyncSetup(root / "synth", data, result.run_dir, result.model_dir, result.validation)


@pytest.fixture(scope="session")
def sync_setup(tmp_path_factory: pytest.TempPathFactory) -> SyncSetup:
    return synthetic_sync_setup(tmp_path_factory)


def _score(model: SyncNet, clip: Clip, audio: np.ndarray) -> SyncScore:
    accumulator = SyncAccumulator(model, batch_size=16)
    for begin in range(0, clip.num_frames, 40):  # streamed in windows
        accumulator.add(np.stack([clip.read_frame(i) for i in range(begin, min(clip.num_frames, begin + 40))]))
    score = accumulator.finish(audio)
    assert score is not None
    return score


@pytest.mark.slow
def test_trained_expert_finds_offsets_and_mismatched_audio(sync_setup: SyncSetup) -> None:
    model = load_syncnet(sync_setup.expert_dir)
    clips = {c.split: c for c in open_clips(sync_setup.data_dir)}
    held_out, seen = clips["test"], clips["train"]
    audio = load_audio(held_out.path / "audio.wav")
    aligned = _score(model, held_out, audio)
    assert aligned.offset == 0 and aligned.num_windows == held_out.num_frames - 5
    for shift in (6, -4):  # audio lagging / leading the video
        shifted = _score(model, held_out, shift_audio(audio, shift))
        assert abs(shifted.offset + shift) <= 1, (shift, shifted.offset)
        assert shifted.lse_d_at_0 > aligned.lse_d + 0.05 and shifted.lse_c_at_0 < aligned.lse_c - 0.05
    other = _score(model, held_out, np.resize(load_audio(seen.path / "audio.wav"), audio.shape))
    assert other.lse_c < 0.5 * aligned.lse_c and other.lse_d > aligned.lse_d + 0.03
    assert sync_setup.validation["offset_accuracy"] == 1.0 and sync_setup.validation["shift_accuracy"] == 1.0


@pytest.mark.slow
def test_training_run_folder_and_resume(sync_setup: SyncSetup, tmp_path: Path) -> None:
    run = sync_setup.run_dir
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,accuracy") and len(rows) > TRAIN_STEPS // 50
    copy = tmp_path / "copy"
    config = SyncNetTrainConfig(
        steps=TRAIN_STEPS + 2, batch_size=16, candidates=4, num_workers=0, accelerator="cpu", eval_clips=0,
        data_dir=str(sync_setup.data_dir), run_dir=str(copy),
    )  # fmt: skip
    shutil.copytree(run, copy)
    again = train_syncnet(config, resume=True, progress=False)
    assert again.step == TRAIN_STEPS + 2 and (again.model_dir / "weights.safetensors").is_file()


@pytest.mark.slow
def test_window_dataset_labels_and_validation(sync_setup: SyncSetup) -> None:
    config = SyncNetTrainConfig(loss="bce", min_shift=3, max_shift=8, batch_size=4)
    dataset = SyncWindowDataset(sync_setup.data_dir, config)
    items: list[dict[str, Any]] = [dataset[i] for i in range(0, len(dataset), 37)]
    labels = {float(item["label"]) for item in items}
    assert labels == {0.0, 1.0}
    assert items[0]["frames"].shape == (3, 5, 32, 64) and items[0]["audio"].shape == (1, 13, 20)
    assert torch.equal(dataset[5]["audio"], dataset[5]["audio"])  # deterministic per (seed, epoch, index)
    multiway = SyncWindowDataset(sync_setup.data_dir, SyncNetTrainConfig(candidates=3))
    first = multiway[0]
    assert first["audio"].shape == (7, 1, 13, 20) and first["valid"].tolist() == [False] * 3 + [True] * 4
    with pytest.raises(ValueError, match="min_shift"):
        SyncNetTrainConfig(min_shift=0)
