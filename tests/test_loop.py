"""The shared training loop on a toy model: one state dict through Fabric, exact resume (also from the
layout earlier versions wrote), SIGTERM, the torch RNG rule, one name for the learning rate, hooks."""

from __future__ import annotations

import csv
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from difftalk.config import ConfigError, LipGANTrainConfig, SyncNetTrainConfig, from_dict
from difftalk.config.training import FabricConfig
from difftalk.train.common import STATE_NAME, RunDir, load_state, make_fabric, save_state
from difftalk.train.ema import EMA
from difftalk.train.loop import Batches, Every, StepOutput, TrainableWeights, TrainingState, fit, linear_warmup

OLD_KEYS = {"version", "step", "model", "optimizer", "ema", "generators", "torch_rng", "config"}
"""What ``training_state.pt`` held before the shared loop (diffusion trainer; the others lack ema/generators)."""


@dataclass(frozen=True)
class ToyConfig(FabricConfig):
    steps: int = 6
    log_every: int = 4
    checkpoint_every: int = 100
    seed: int = 0


class ToyData(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(20, 4, generator=generator)
        self.y = self.x.sum(1, keepdim=True)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def _train(run_dir: Path, config: ToyConfig, stop_at: int | None = None, extra_object: bool = False):
    """The toy trainer: dropout draws from the global torch RNG, the input noise from a per-rank generator."""
    fabric = make_fabric(config)
    run = RunDir(run_dir, active=True)
    torch.manual_seed(config.seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fabric_model, optimizer = fabric.setup(model, optimizer)
    ema = EMA(list(model.named_parameters()), 0.9)
    generator = torch.Generator().manual_seed(7)
    objects = {"model": TrainableWeights(model), "optimizer": optimizer, "ema": ema}
    if extra_object:
        objects["discriminator"] = nn.Linear(1, 1)
    state = TrainingState(fabric, run, config, objects, config.seed, generator=generator)
    state.restore()

    def step_fn(batch: tuple[torch.Tensor, torch.Tensor], index: int) -> StepOutput:
        if index + 1 == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends; fit checkpoints after this step
        x, y = batch
        noise = torch.randn(x.shape, generator=generator)
        loss = ((fabric_model(x + 0.1 * noise) - y) ** 2).mean()
        return StepOutput(loss, {"noise": noise.mean()}, after=lambda: ema.update(list(model.parameters())))

    result = fit(
        fabric,
        state,
        Batches.build(fabric, ToyData(), 4, config.seed, 0),
        step_fn,
        run=run,
        settings=config,
        optimizer=optimizer,
        section="toy",
        samples_per_step=4,
        progress=False,
        learning_rate=linear_warmup(1e-2, 4),
        clip=(fabric_model, 1.0),
        hooks=[Every(2, lambda step: {"val_step": float(step)}, at_end=True)],
    )
    run.close()
    return model, ema, result


def _same(a: tuple[nn.Module, EMA], b: tuple[nn.Module, EMA]) -> bool:
    weights = all(torch.equal(p, q) for p, q in zip(a[0].parameters(), b[0].parameters(), strict=True))
    return weights and all(torch.equal(p, q) for p, q in zip(a[1].shadow, b[1].shadow, strict=True))


def _as_old_layout(path: Path) -> None:
    """Rewrite a state as earlier versions wrote it (no per-rank torch RNG states)."""
    state = load_state(path)
    assert set(state) >= OLD_KEYS and len(state["torch_rngs"]) == 1
    save_state(path, {key: value for key, value in state.items() if key in OLD_KEYS})


@pytest.mark.parametrize("old_layout", [False, True])
def test_resume_continues_the_uninterrupted_run_exactly(tmp_path: Path, old_layout: bool) -> None:
    config = ToyConfig()
    straight = _train(tmp_path / "straight", config)
    half = _train(tmp_path / "split", ToyConfig(steps=3))
    assert half[2].step == 3 and not half[2].stopped
    if old_layout:
        _as_old_layout(tmp_path / "split" / "checkpoints" / STATE_NAME)
    resumed = _train(tmp_path / "split", config)
    assert resumed[2].step == 6 and _same(straight[:2], resumed[:2])
    assert load_state(tmp_path / "split" / "checkpoints" / STATE_NAME)["step"] == 6
    # ... and the global torch RNG matters here: without it the dropout masks differ.
    half_again = _train(tmp_path / "no_rng", ToyConfig(steps=3))
    path = tmp_path / "no_rng" / "checkpoints" / STATE_NAME
    save_state(path, {k: v for k, v in load_state(path).items() if k not in ("torch_rng", "torch_rngs")})
    assert half_again[2].step == 3 and not _same(straight[:2], _train(tmp_path / "no_rng", config)[:2])


def test_sigterm_checkpoints_the_step_and_the_resumed_run_matches(tmp_path: Path) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")
    config = ToyConfig()
    stopped = _train(tmp_path / "run", config, stop_at=2)
    assert stopped[2].stopped and stopped[2].step == 2
    assert load_state(tmp_path / "run" / "checkpoints" / STATE_NAME)["step"] == 2
    assert _same(_train(tmp_path / "straight", config)[:2], _train(tmp_path / "run", config)[:2])


def test_metrics_rows_name_the_learning_rate_lr_and_carry_the_hooks_values(tmp_path: Path) -> None:
    _train(tmp_path, ToyConfig())
    with open(tmp_path / "metrics.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert header[:5] == ["step", "epoch", "loss", "noise", "lr"] and "learning_rate" not in header
    assert "grad_norm" in header and "samples_per_second" in header
    # log_every=4, the hook every 2 steps and at the end: rows at 2, 4, 6
    assert [row["step"] for row in rows] == ["2", "4", "6"] and [row["val_step"] for row in rows] == [
        "2.0",
        "4.0",
        "6.0",
    ]
    assert [float(row["lr"]) for row in rows] == pytest.approx([5e-3, 1e-2, 1e-2])  # linear warm-up over 4 steps


def test_a_state_without_an_object_of_this_run_is_a_clear_error(tmp_path: Path) -> None:
    _train(tmp_path, ToyConfig(steps=2))
    with pytest.raises(ValueError, match="discriminator"):
        _train(tmp_path, ToyConfig(steps=4), extra_object=True)


def test_baseline_trainer_configs_validate_like_the_others() -> None:
    cases = ((SyncNetTrainConfig, "syncnet_train", "batch_size"), (LipGANTrainConfig, "lipgan_train", "steps"))
    for cls, section, field in cases:
        with pytest.raises(ConfigError, match=rf"{section}\.{field}"):
            from_dict(cls, {field: 0}, prefix=section)
    with pytest.raises(ConfigError, match=r"model\.context_frames"):
        from_dict(LipGANTrainConfig, {"model": {"context_frames": 2}})
    assert SyncNetTrainConfig(data_dir="d", run_dir="r").run_dir == "r"
