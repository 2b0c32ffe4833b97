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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from difftalk.config.syncnet import SyncNetTrainConfig
from difftalk.data.clips import Clip, DatasetError, load_manifest, open_clips
from difftalk.io.audio import load_audio
from difftalk.metrics.sync import FPS, SyncAccumulator, mfcc, mfcc_windows, prepare_frames, shift_audio
from difftalk.models.syncnet import MFCC_STEPS_PER_FRAME, SyncNet
from difftalk.train.loop import Batches, Every, StepOutput, TrainingState, fit, open_run

__all__ = [
    "SyncNetTrainConfig",  # defined in difftalk.config.syncnet; imported from here by earlier code
    "SyncNetTrainResult",
    "SyncWindowDataset",
    "face_windows",
    "sync_loss",
    "train_syncnet",
    "validate_expert",
]

logger = logging.getLogger(__name__)

MODEL_DIR = "syncnet"


def face_windows(
    clips: Sequence[Clip], window: int, where: str, mfccs: Sequence[np.ndarray] | None = None
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The windows of ``window`` consecutive frames with a face in each, over ``clips``.

    Returns:
        ``(last_start, clip_of, start_of)``: per clip, the last start frame whose window fits the clip (and
        its MFCCs, when given); per window, its clip's index and its start frame.

    Raises:
        DatasetError: there is no such window (``where`` names the data in the message).
    """
    last_start, clip_of, start_of = [], [], []
    for index, clip in enumerate(clips):
        last = clip.num_frames - window
        if mfccs is not None:
            last = min(last, (mfccs[index].shape[1] - MFCC_STEPS_PER_FRAME * window) // MFCC_STEPS_PER_FRAME)
        last_start.append(last)
        found = np.asarray(clip.face_found, dtype=bool)
        for start in range(last + 1):
            if found[start : start + window].all():
                clip_of.append(index)
                start_of.append(start)
    if not start_of:
        raise DatasetError(f"{where} has no {window}-frame window with a face")
    return last_start, np.asarray(clip_of, dtype=np.int32), np.asarray(start_of, dtype=np.int32)


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
        where = f"{data_dir} ({split or config.split})"
        self.last_start, self._clip_of, self._start_of = face_windows(self.clips, window, where, self.mfccs)

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


def train_syncnet(config: SyncNetTrainConfig, resume: bool = True, progress: bool = True) -> SyncNetTrainResult:
    """Train (or resume) a SyncNet expert on ``config.data_dir``; outputs go to ``config.run_dir``
    (``resume``, ``progress``: see :mod:`difftalk.train`)."""
    fabric, run = open_run(config)
    rank, world = fabric.global_rank, fabric.world_size
    torch.manual_seed(config.seed + rank)
    logger.info("train-syncnet: seed %d, loss %s, data %s", config.seed, config.loss, config.data_dir)

    model = SyncNet(config.model)
    dataset = SyncWindowDataset(config.data_dir, config)
    try:
        eval_clips = open_clips(config.data_dir, config.eval_split)
    except DatasetError:
        eval_clips = dataset.clips
    eval_clips = eval_clips[: config.eval_clips]
    batches = Batches.build(fabric, dataset, config.batch_size, config.seed, config.num_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    fabric_model, optimizer = fabric.setup(model, optimizer)
    objects = {"model": model, "optimizer": optimizer}
    state = TrainingState(fabric, run, config, objects, config.seed)
    if (state.restore() if resume else None) is None:
        run.write_run_info(config, world, {"stage": "syncnet", "data_dir": config.data_dir})

    validation: dict[str, float] = {}

    def step_fn(batch: dict[str, torch.Tensor], index: int) -> StepOutput:
        batch = {key: value.to(fabric.device) for key, value in batch.items()}
        loss, accuracy = sync_loss(fabric_model, batch, config)
        return StepOutput(loss, means={"accuracy": accuracy})

    def validate(step: int) -> dict[str, float]:
        nonlocal validation
        if not (fabric.is_global_zero and eval_clips):
            return {}
        validation = validate_expert(model, eval_clips, config.eval_shift, fabric.device)
        logger.info("step %d validation: %s", step, validation)
        return {f"val_{k}": v for k, v in validation.items()}

    def export(step: int) -> None:
        model.save_pretrained(run.checkpoints / MODEL_DIR, extra={"step": step, "validation": validation})

    result = fit(
        fabric,
        state,
        batches,
        step_fn,
        run=run,
        settings=config,
        optimizer=optimizer,
        section="syncnet_train",
        samples_per_step=config.batch_size,
        progress=progress,
        hooks=[Every(config.eval_every, validate, at_end=True)],
        export=export,
        show=("accuracy",),
    )
    run.close()
    return SyncNetTrainResult(run.path, result.step, result.last_loss, run.checkpoints / MODEL_DIR, validation)
