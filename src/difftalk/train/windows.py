"""Window samples: ``T`` consecutive frames with a face of one clip, one reference, and their MFCC window.

What a 5-frame sync expert judges (Wav2Lip, SyncNet). Used by the Wav2Lip-style GAN baseline
(``train.lipgan``) and by the diffusion trainer's expert sync loss (``train.diffusion``,
``train.sync_weight``). Each frame of a window is built by ``TalkingHeadDataset.make_sample`` — frames or
cached latents, exactly as a single-frame training sample — so every trainer sees the same conditions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from difftalk.data.batch import TalkingHeadBatch
from difftalk.data.dataset import TalkingHeadDataset
from difftalk.io.audio import load_audio
from difftalk.metrics.sync import mfcc, mfcc_windows
from difftalk.train.syncnet import face_windows

__all__ = ["FrameWindows", "flatten_windows"]


class FrameWindows(Dataset[TalkingHeadBatch]):
    """Every window of ``window`` consecutive frames with a face of ``frames``' clips.

    A sample is a :class:`TalkingHeadBatch` with a leading window dimension ``T`` on every field (one
    reference frame for the window, drawn around its centre frame from
    ``np.random.default_rng((seed, epoch, index))``) and, with ``with_mfcc``, ``mfcc`` ``(1, 13, 4T)``: the
    window's MFCC (``metrics.sync.mfcc``, computed once per clip here). Collated by
    ``data.batch.collate_samples`` to ``(W, T, ...)``; :func:`flatten_windows` makes ``W·T`` frames of it.
    """

    def __init__(
        self, frames: TalkingHeadDataset, window: int, seed: int, with_mfcc: bool = False, where: str | Path = ""
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.frames = frames
        self.clips = frames.clips
        self.window = window
        self.seed = seed
        self.epoch = 0
        self.mfccs = [mfcc(load_audio(clip.path / "audio.wav")) for clip in self.clips] if with_mfcc else None
        _, self._clip_of, self._start_of = face_windows(self.clips, window, str(where or "the dataset"), self.mfccs)

    def __len__(self) -> int:
        return int(self._start_of.size)

    def set_epoch(self, epoch: int) -> None:
        """New reference choices for the next pass."""
        self.epoch = epoch
        self.frames.set_epoch(epoch)

    def locate(self, index: int) -> tuple[int, int]:
        """(clip index, first frame) of window ``index``."""
        return int(self._clip_of[index]), int(self._start_of[index])

    def __getitem__(self, index: int) -> TalkingHeadBatch:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        clip_index, start = self.locate(index)
        reference = self.frames.choose_reference(self.clips[clip_index], start + self.window // 2, rng)
        samples = [self.frames.make_sample(clip_index, start + i, reference) for i in range(self.window)]
        fields = {}
        for field in dataclasses.fields(TalkingHeadBatch):
            values = [getattr(s, field.name) for s in samples]
            fields[field.name] = None if values[0] is None else torch.stack(values)
        if self.mfccs is not None:
            fields["mfcc"] = mfcc_windows(self.mfccs[clip_index], [start], self.window)[0]
        return TalkingHeadBatch(**fields)  # type: ignore[arg-type]


def flatten_windows(batch: TalkingHeadBatch) -> TalkingHeadBatch:
    """A collated window batch ``(W, T, ...)`` as ``W·T`` frames (window-major); ``mfcc`` stays ``(W, 1, 13, 4T)``."""
    fields: dict[str, torch.Tensor | None] = {}
    for field in dataclasses.fields(TalkingHeadBatch):
        value = getattr(batch, field.name)
        fields[field.name] = value if value is None or field.name == "mfcc" else value.flatten(0, 1)
    return TalkingHeadBatch(**fields)  # type: ignore[arg-type]
