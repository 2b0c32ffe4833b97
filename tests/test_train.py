"""Training end to end on a tiny prepared dataset: run folder, exact resume, SIGTERM, 2-process DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from difftalk.config import load_config, replace
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.models.autoencoder import Autoencoder
from difftalk.models.difftalk import DiffTalkModel
from difftalk.train.autoencoder import train_autoencoder
from difftalk.train.common import STATE_NAME, load_state
from difftalk.train.diffusion import T_RANGES, train_diffusion

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _config(data_dir, run_dir, **overrides):
    base = {"data.data_dir": str(data_dir), "train.run_dir": str(run_dir), "train.sample_every": 0}
    return replace(load_config("tiny"), {**base, **overrides})


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_state(run_dir / "checkpoints" / STATE_NAME)["model"]


@pytest.mark.slow
def test_training_writes_a_complete_run_folder(prepared_dataset, tmp_path):
    run_dir = tmp_path / "run"
    config = _config(prepared_dataset, run_dir, **{"train.steps": 4, "train.log_every": 2, "train.sample_every": 4})
    result = train_diffusion(config, progress=False)
    assert result.step == 4 and not result.stopped_early
    assert load_config(run_dir / "config.yaml") == config
    info = json.loads((run_dir / "run.json").read_text())
    assert info["git_sha"] and info["world_size"] == 1
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr,grad_norm") and len(rows) == 3
    assert list((run_dir / "tensorboard").iterdir())
    assert (run_dir / "samples" / "step_0000004.png").stat().st_size > 0
    model = DiffTalkModel.from_pretrained(result.model_dir)
    # scale_by_std: the checkpoint records the scale that gives the training latents unit variance
    scale = info["latent_scale"]
    assert scale != 1.0 and model.config == replace(config.model, {"latent_scale": scale})
    frames = TalkingHeadDataset(
        prepared_dataset,
        image_size=config.model.autoencoder.image_size,
        context_frames=config.model.audio_encoder.context_frames,
    )
    batch = torch.stack([frames[i].target_frames for i in range(0, len(frames), max(1, len(frames) // 16))])
    assert 0.8 < float(model.encode_frames(batch).std()) < 1.25
    torch.testing.assert_close(
        model.decode_latents(model.encode_frames(batch)),
        model.autoencoder.decode(model.autoencoder.encode(batch)).clamp(-1, 1),
    )
    assert json.loads((run_dir / "final.json").read_text())["step"] == 4


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_weights(prepared_dataset, tmp_path):
    straight = _config(prepared_dataset, tmp_path / "a", **{"train.steps": 6, "train.checkpoint_every": 100})
    train_diffusion(straight, progress=False)
    first_half = _config(prepared_dataset, tmp_path / "b", **{"train.steps": 3})
    train_diffusion(first_half, progress=False)
    assert load_state(tmp_path / "b" / "checkpoints" / STATE_NAME)["step"] == 3
    train_diffusion(replace(first_half, {"train.steps": 6}), progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_a = load_state(tmp_path / "a" / "checkpoints" / STATE_NAME)["ema"]["shadow"]
    ema_b = load_state(tmp_path / "b" / "checkpoints" / STATE_NAME)["ema"]["shadow"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    # ... and training did change the weights.
    fresh = DiffTalkModel(straight.model)
    assert not torch.equal(dict(fresh.named_parameters())["unet.conv_out.weight"], a["unet.conv_out.weight"])


def _train_command(data_dir, run_dir, steps, *extra):
    return [
        sys.executable, "-m", "difftalk.cli", "-q", "train", "--config", "tiny", "--data", str(data_dir),
        "--run-dir", str(run_dir), "--no-progress",
        "--set", f"train.steps={steps}", "--set", "train.sample_every=0", "--set", "train.checkpoint_every=1000",
        "--set", "train.log_every=1", "--set", "train.accelerator=cpu", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_resumed_run_matches(prepared_dataset, tmp_path):
    killed = tmp_path / "killed"
    # DataLoader workers and a new session: the signal goes to the whole process group, as schedulers
    # (SLURM, Kubernetes, Ctrl-C) send it; workers must not die before the trainer checkpoints.
    workers = ("--set", "data.num_workers=2")
    command = _train_command(prepared_dataset, killed, 100_000, *workers)
    process = subprocess.Popen(command, env=ENV, start_new_session=True)
    metrics = killed / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    stopped_at = load_state(killed / "checkpoints" / STATE_NAME)["step"]
    assert 3 <= stopped_at < 100_000
    target = stopped_at + 3
    subprocess.run(_train_command(prepared_dataset, killed, target, *workers), env=ENV, check=True)
    straight = tmp_path / "straight"
    subprocess.run(_train_command(prepared_dataset, straight, target, *workers), env=ENV, check=True)
    a, b = _weights(killed), _weights(straight)
    assert load_state(killed / "checkpoints" / STATE_NAME)["step"] == target
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_replicas_identical(prepared_dataset, tmp_path):
    run_dir = tmp_path / "ddp"
    command = _train_command(
        prepared_dataset,
        run_dir,
        4,
        "--set",
        "train.devices=2",
        "--set",
        "train.strategy=ddp",
        "--set",
        "train.batch_size=2",
    )
    subprocess.run(command, env={**ENV, "MASTER_PORT": str(29500 + os.getpid() % 1000)}, check=True, timeout=300)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["world_size"] == 2 and final["step"] == 4
    assert len(final["weight_checksums"]) == 2 and len(set(final["weight_checksums"])) == 1
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_autoencoder_training_reduces_reconstruction_error_and_resumes(prepared_dataset, tmp_path):
    from difftalk.data.frames import FrameDataset

    run_dir = tmp_path / "ae"
    overrides = {
        "data.data_dir": str(prepared_dataset),
        "autoencoder_train.run_dir": str(run_dir),
        "autoencoder_train.steps": 40,
        "autoencoder_train.learning_rate": 0.002,
        "autoencoder_train.sample_every": 40,
        "autoencoder_train.log_every": 5,
        "autoencoder_train.color_augment": False,  # 40 steps: measure the loop, not generalisation
    }
    config = replace(load_config("tiny"), overrides)
    frames = torch.stack([FrameDataset(prepared_dataset, image_size=64)[i] for i in range(0, 78, 8)])

    def error(model: Autoencoder) -> float:
        with torch.no_grad():
            return float((model.decode(model.encode(frames)) - frames).abs().mean())

    torch.manual_seed(0)
    before = error(Autoencoder(config.model.autoencoder).eval())
    result = train_autoencoder(config, progress=False)
    model = Autoencoder.from_pretrained(result.model_dir)
    assert model.config == config.model.autoencoder
    assert error(model) < 0.5 * before, (before, error(model))
    assert (run_dir / "samples" / "step_0000040.png").is_file()
    assert "l1" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    augmented = {"autoencoder_train.steps": 42, "autoencoder_train.color_augment": True}
    resumed = train_autoencoder(replace(config, augmented), progress=False)
    assert resumed.step == 42


@pytest.mark.slow
def test_diffusion_training_uses_a_trained_autoencoder_and_checks_it(prepared_dataset, tmp_path):
    config = _config(prepared_dataset, tmp_path / "run", **{"train.steps": 1})
    Autoencoder(config.model.autoencoder).save_pretrained(tmp_path / "ae")
    train_diffusion(replace(config, {"train.autoencoder": str(tmp_path / "ae")}), progress=False)
    other = replace(config, {"model.autoencoder.num_embeddings": 128})
    with pytest.raises(ValueError, match="make the config match"):
        train_diffusion(
            replace(other, {"train.autoencoder": str(tmp_path / "ae"), "train.run_dir": str(tmp_path / "r2")}),
            progress=False,
        )


def test_metrics_csv_grows_columns_without_losing_rows(tmp_path):
    import csv

    from difftalk.train.common import RunDir

    run = RunDir(tmp_path, active=True)
    run.log(1, {"loss": 0.5})
    run.log(2, {"loss": 0.4, "val_loss": 0.7})
    run.log(3, {"loss": 0.3})
    run.close()
    with open(tmp_path / "metrics.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["val_loss"] == "0.7" and rows[0]["val_loss"] == "" and rows[2]["loss"] == "0.3"


@pytest.mark.slow
def test_recipe_options_train_and_log_the_loss_by_t_range_and_mask(prepared_dataset, tmp_path):
    """Min-SNR-γ, the mouth-weighted loss, the latent masked target, the centre-start filter and the
    multi-token context train together, from the latent cache, and log the unweighted ε-MSE inside and
    outside the mouth mask per t range; the checkpoint keeps the model-side choices."""
    run_dir = tmp_path / "recipe"
    recipe = {
        "train.min_snr_gamma": 5.0,
        "train.mask_loss_outside": 0.1,
        "model.masked_target": "latent",
        "model.audio_encoder.filter_init": "centre",
        "model.context": "multi_token",
        "train.audio_dropout": 0.25,
    }
    config = _config(prepared_dataset, run_dir, **{"train.steps": 6, "train.log_every": 3, **recipe})
    result = train_diffusion(config, progress=False)
    assert result.step == 6
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    ranges = [k for k in rows[0] if k.startswith("mse_")]
    assert set(ranges) == {f"mse_{w}_t{a}_{b}" for a, b in T_RANGES for w in ("in", "out")}
    seen = [float(row[k]) for row in rows for k in ranges if row[k] not in ("", "nan")]
    assert seen and all(v > 0 for v in seen)
    model = DiffTalkModel.from_pretrained(result.model_dir)
    assert model.config.masked_target == "latent" and model.config.audio_encoder.filter_init == "centre"
    assert model.audio_encoder.temporal_filter.frame_bias is not None
    meta = json.loads((result.model_dir / "config.json").read_text())
    assert meta["extra"]["audio_dropout"] == 0.25  # the pipeline reads it before guiding the audio
