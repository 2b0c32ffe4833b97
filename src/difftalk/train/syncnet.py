"""``difftalk train-syncnet``: train a SyncNet lip-sync expert on any prepared dataset.

Samples are 5-frame windows of a clip's face crops with MFCC windows of its ``audio.wav``. Two losses:

* ``multiway`` (default; the "perfect match" multi-way formulation of Chung et al. 2019): for a video
  window the candidates are the audio windows of the same clip shifted by ``−S … S`` frames; logits are
  cosine similarities / ``temperature``; cross-entropy picks the unshifted one. This trains exactly the
  decision the LSE offset search makes.
* ``bce`` (Wav2Lip's expert): half of the pairs are aligned (label 1), half are negatives — audio
  shifted by ``min_shift … max_shift`` frames or taken from another clip (label 0); loss
  ``BCE((cos + 1) / 2, label)``.

Runs on Fabric like the other trainers (run folder, ``metrics.csv``, atomic checkpoints, exact resume,
SIGTERM). Every ``eval_every`` steps the expert is validated with the real metric on held-out clips:
LSE-C / LSE-D of the aligned audio, and the offset it detects for audio delayed by ``eval_shift`` frames.
Writes ``<run_dir>/checkpoints/syncnet`` (a ``SyncNet`` checkpoint folder for ``difftalk evaluate --syncnet``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from difftalk.config.fields import to_dict
from difftalk.config.training import FabricConfig, Precision
from difftalk.data.clips import Clip, DatasetError, load_manifest, open_clips
from difftalk.io.audio import load_audio
from difftalk.metrics.sync import FPS, SyncAccumulator, mfcc, mfcc_windows, prepare_frames, shift_audio
from difftalk.models.syncnet import MFCC_STEPS_PER_FRAME, SyncNet, SyncNetConfig
from difftalk.train.common import (
    STATE_NAME,
    RunDir,
    StopSignal,
    ignore_stop_signals,
    iterate_batches,
    load_state,
    make_fabric,
    save_state,
    stop_everywhere,
)
from difftalk.train.sampler import ResumableSampler

logger = logging.getLogger(__name__)

MODEL_DIR = "syncnet"


@dataclass(frozen=True)
class SyncNetTrainConfig(FabricConfig):
    """Training of the SyncNet expert (``difftalk train-syncnet --set key=value``)."""

    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    """Architecture (default: the ``small`` preset)."""
    loss: Literal["multiway", "bce"] = "multiway"
    """``multiway``: cross-entropy over shifted audio candidates; ``bce``: Wav2Lip's cosine BCE."""
    split: str = "train"
    """Dataset split to train on (``train``, ``test`` or ``all``)."""
    eval_split: str = "test"
    """Split of the validation clips (falls back to ``split`` when it is empty)."""
    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 32
    """Windows per device per step."""
    learning_rate: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    candidates: int = 6
    """``multiway``: audio shifts −S … S frames are the candidates."""
    temperature: float = 0.1
    """``multiway``: logits are cosine / temperature."""
    min_shift: int = 3
    """``bce``: negatives are shifted by at least this many frames ..."""
    max_shift: int = 15
    """... and at most this many."""
    other_clip_prob: float = 0.3
    """``bce``: probability that a negative takes its audio from another clip instead."""
    num_workers: int = 2
    """DataLoader workers (0 = load in the training process)."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    precision: Precision = "32-true"
    """Full precision by default (``auto`` picks bf16-mixed on GPUs that support it)."""
    log_every: int = 25
    """Steps between metrics.csv rows."""
    checkpoint_every: int = 500
    """Steps between checkpoints (and at the end)."""
    eval_every: int = 500
    """Steps between validations (0 = only at the end)."""
    eval_clips: int = 4
    """Validation clips."""
    eval_shift: int = 5
    """Validation delays the audio by this many frames and expects offset −eval_shift."""

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 2,
            "learning_rate": self.learning_rate > 0,
            "candidates": self.candidates >= 1,
            "temperature": self.temperature > 0,
            "min_shift": 1 <= self.min_shift <= self.max_shift,
            "other_clip_prob": 0.0 <= self.other_clip_prob <= 1.0,
            "num_workers": self.num_workers >= 0,
            "log_every": self.log_every >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "eval_every": self.eval_every >= 0,
            "eval_clips": self.eval_clips >= 0,
            "eval_shift": self.eval_shift >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SyncNetTrainConfig.{name}: invalid value {getattr(self, name)!r}")


class SyncWindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Every 5-frame window with a face of a split, with its audio candidates or a labelled audio window.

    Random choices (positive or negative, which shift, which other clip) come from
    ``np.random.default_rng((seed, epoch, index))``. MFCCs are computed once per clip at construction.
    """

    def __init__(self, data_dir: str | Path, config: SyncNetTrainConfig, split: str | None = None) -> None:
        manifest = load_manifest(data_dir)
        if abs(float(manifest.get("fps", FPS)) - FPS) > 1e-6:
            raise DatasetError(f"{data_dir} is at {manifest.get('fps')} fps; the SyncNet protocol needs {FPS} fps")
        self.config = config
        self.model_config = config.model
        self.clips: list[Clip] = open_clips(data_dir, split or config.split)
        self.epoch = 0
        window = config.model.num_frames
        self.mfccs = [mfcc(load_audio(clip.path / "audio.wav")) for clip in self.clips]
        self.last_start = []
        clip_of, start_of = [], []
        for index, (clip, coefficients) in enumerate(zip(self.clips, self.mfccs, strict=True)):
            last = min(
                clip.num_frames - window,
                (coefficients.shape[1] - MFCC_STEPS_PER_FRAME * window) // MFCC_STEPS_PER_FRAME,
            )
            self.last_start.append(last)
            found = np.asarray(clip.face_found, dtype=bool)
            for start in range(last + 1):
                if found[start : start + window].all():
                    clip_of.append(index)
                    start_of.append(start)
        self._clip_of = np.asarray(clip_of, dtype=np.int32)
        self._start_of = np.asarray(start_of, dtype=np.int32)
        if self._start_of.size == 0:
            raise DatasetError(f"{data_dir} ({split or config.split}) has no {window}-frame window with a face")

    def __len__(self) -> int:
        return int(self._start_of.size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _frames(self, clip: Clip, start: int) -> torch.Tensor:
        crops = np.stack([clip.read_frame(start + i) for i in range(self.model_config.num_frames)])
        return prepare_frames(crops, self.model_config).transpose(0, 1).contiguous()

    def _negative(self, clip_index: int, start: int, rng: np.random.Generator) -> tuple[int, int]:
        config = self.config
        last = self.last_start[clip_index]
        shifts = [s for s in range(-config.max_shift, config.max_shift + 1) if abs(s) >= config.min_shift]
        shifts = [s for s in shifts if 0 <= start + s <= last]
        if len(self.clips) > 1 and (not shifts or rng.random() < config.other_clip_prob):
            other = int(rng.integers(len(self.clips) - 1))
            other += other >= clip_index
            return other, int(rng.integers(self.last_start[other] + 1))
        if not shifts:
            raise DatasetError(f"clip {self.clips[clip_index].name} is too short for negatives; add clips or frames")
        return clip_index, start + int(rng.choice(shifts))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.config.seed, self.epoch, index))
        clip_index, start = int(self._clip_of[index]), int(self._start_of[index])
        frames = self._frames(self.clips[clip_index], start)
        window = self.model_config.num_frames
        if self.config.loss == "multiway":
            radius = self.config.candidates
            starts = [start + s for s in range(-radius, radius + 1)]
            valid = torch.tensor([0 <= s <= self.last_start[clip_index] for s in starts])
            audio = mfcc_windows(
                self.mfccs[clip_index], [min(max(s, 0), self.last_start[clip_index]) for s in starts], window
            )
            return {"frames": frames, "audio": audio, "valid": valid}
        if rng.random() < 0.5:
            audio_clip, audio_start, label = clip_index, start, 1.0
        else:
            (audio_clip, audio_start), label = self._negative(clip_index, start, rng), 0.0
        audio = mfcc_windows(self.mfccs[audio_clip], [audio_start], window)[0]
        return {"frames": frames, "audio": audio, "label": torch.tensor(label)}


def sync_loss(model: Any, batch: dict[str, torch.Tensor], config: SyncNetTrainConfig) -> tuple[torch.Tensor, float]:
    """(loss, accuracy) of a batch: multi-way cross-entropy over shifts or cosine BCE."""
    visual = F.normalize(model.embed_frames(batch["frames"]).float(), dim=1)
    if config.loss == "multiway":
        candidates = batch["audio"]
        size, count = candidates.shape[:2]
        audio = F.normalize(model.embed_audio(candidates.flatten(0, 1)).float(), dim=1).view(size, count, -1)
        logits = torch.einsum("bd,bkd->bk", visual, audio) / config.temperature
        logits = logits.masked_fill(~batch["valid"], float("-inf"))
        target = torch.full((size,), config.candidates, dtype=torch.long, device=logits.device)
        accuracy = float((logits.argmax(1) == target).float().mean())
        return F.cross_entropy(logits, target), accuracy
    audio = F.normalize(model.embed_audio(batch["audio"]).float(), dim=1)
    probability = ((visual * audio).sum(1) + 1).div(2).clamp(1e-6, 1 - 1e-6)
    label = batch["label"].float()
    accuracy = float(((probability > 0.5).float() == label).float().mean())
    return F.binary_cross_entropy(probability, label), accuracy


@torch.no_grad()
def validate_expert(
    model: SyncNet, clips: list[Clip], shift: int = 5, device: torch.device | str = "cpu", chunk: int = 64
) -> dict[str, float]:
    """The real metric on ``clips``: their own audio, that audio delayed by ``shift`` frames, and another clip's.

    Returns:
        Means over clips: ``lse_d`` / ``lse_c`` (own audio), ``lse_d_other`` / ``lse_c_other`` (audio of the
        next clip in the list), ``offset_accuracy`` (fraction with offset 0 for the own audio) and
        ``shift_accuracy`` (fraction whose offset for the delayed audio is within 1 frame of ``−shift``).
    """
    was_training = model.training
    model.eval()
    audios = [load_audio(clip.path / "audio.wav") for clip in clips]
    rows = []
    for index, clip in enumerate(clips):
        accumulator = SyncAccumulator(model, batch_size=chunk, device=device)
        for begin in range(0, clip.num_frames, chunk):
            stop = min(clip.num_frames, begin + chunk)
            accumulator.add(np.stack([clip.read_frame(i) for i in range(begin, stop)]))
        audio = audios[index]
        other = audios[(index + 1) % len(clips)]
        other = np.resize(other, audio.shape) if len(clips) > 1 else shift_audio(audio, 50)
        aligned, delayed, mismatched = (accumulator.finish(a) for a in (audio, shift_audio(audio, shift), other))
        if aligned is None or delayed is None or mismatched is None:
            continue
        rows.append(
            (
                aligned.lse_d,
                aligned.lse_c,
                mismatched.lse_d,
                mismatched.lse_c,
                aligned.offset == 0,
                abs(delayed.offset + shift) <= 1,
            )
        )
    model.train(was_training)
    if not rows:
        return {}
    values = np.asarray(rows, dtype=np.float64).mean(axis=0)
    keys = ("lse_d", "lse_c", "lse_d_other", "lse_c_other", "offset_accuracy", "shift_accuracy")
    return {key: float(value) for key, value in zip(keys, values, strict=True)}


@dataclass
class SyncNetTrainResult:
    """What :func:`train_syncnet` produced."""

    run_dir: Path
    step: int
    last_loss: float
    model_dir: Path
    """The ``SyncNet`` checkpoint folder."""
    validation: dict[str, float]
    """The last :func:`validate_expert` numbers (empty if there were no validation clips)."""


def train_syncnet(
    config: SyncNetTrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
) -> SyncNetTrainResult:
    """Train (or resume) a SyncNet expert on the prepared dataset ``data_dir``; outputs go to ``run_dir``."""
    fabric = make_fabric(config)
    rank, world = fabric.global_rank, fabric.world_size
    run = RunDir(run_dir, active=fabric.is_global_zero)
    state_path = run.checkpoints / STATE_NAME
    torch.manual_seed(config.seed + rank)
    logger.info("train-syncnet: seed %d, loss %s, data %s", config.seed, config.loss, data_dir)

    model = SyncNet(config.model)
    dataset = SyncWindowDataset(data_dir, config)
    try:
        eval_clips = open_clips(data_dir, config.eval_split)
    except DatasetError:
        eval_clips = dataset.clips
    eval_clips = eval_clips[: config.eval_clips]
    sampler = ResumableSampler(len(dataset), config.batch_size, rank, world, config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=fabric.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    fabric_model, optimizer = fabric.setup(model, optimizer)

    start_step = 0
    if resume and state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step = int(state["step"])
        logger.info("resumed from %s at step %d", state_path, start_step)
    else:
        run.write_run_info(config, world, {"stage": "syncnet", "data_dir": str(data_dir)})

    validation: dict[str, float] = {}

    def validate(step: int) -> None:
        nonlocal validation
        if fabric.is_global_zero and eval_clips:
            validation = validate_expert(model, eval_clips, config.eval_shift, fabric.device)
            logger.info("step %d validation: %s", step, validation)
            run.log(step, {f"val_{k}": v for k, v in validation.items()})

    def checkpoint(step: int) -> None:
        if fabric.is_global_zero:
            state = {
                "version": 1,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": to_dict(config),
            }
            save_state(state_path, state)
            model.save_pretrained(run.checkpoints / MODEL_DIR, extra={"step": step, "validation": validation})
        fabric.barrier()

    bar = tqdm(total=config.steps, initial=start_step, desc="syncnet", disable=not (progress and fabric.is_global_zero))
    step, loss_value, accuracy_sum, window_steps = start_step, float("nan"), 0.0, 0
    window_start = time.perf_counter()
    with StopSignal() as stop:
        for index, epoch, batch in iterate_batches(loader, sampler, dataset, start_step, config.steps):
            batch = {key: value.to(fabric.device) for key, value in batch.items()}
            loss, accuracy = sync_loss(fabric_model, batch, config)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            step, window_steps = index + 1, window_steps + 1
            loss_value, accuracy_sum = float(loss.detach()), accuracy_sum + accuracy
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower the learning rate")
            bar.update()
            if step % config.log_every == 0 or step == config.steps:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                bar.set_postfix(loss=f"{loss_value:.4f}", acc=f"{accuracy_sum / window_steps:.3f}")
                run.log(
                    step,
                    {
                        "epoch": epoch,
                        "loss": loss_value,
                        "accuracy": accuracy_sum / window_steps,
                        "steps_per_second": window_steps / elapsed,
                    },
                )
                window_start, window_steps, accuracy_sum = time.perf_counter(), 0, 0.0
            stop_now = stop_everywhere(fabric, stop.requested)
            final = step == config.steps or stop_now
            if (config.eval_every and step % config.eval_every == 0) or final:
                validate(step)
            if step % config.checkpoint_every == 0 or final:
                checkpoint(step)
            if stop_now:
                break
    bar.close()
    run.close()
    return SyncNetTrainResult(run.path, step, loss_value, run.checkpoints / MODEL_DIR, validation)
