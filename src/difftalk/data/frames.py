"""Single face crops for training the autoencoder (stage ③)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from difftalk.data.clips import Clip, frame_index, open_clips
from difftalk.data.transforms import to_tensor


class FrameDataset(Dataset[torch.Tensor]):
    """Every frame with a face of a split, as ``(3, S, S)`` in [-1, 1], randomly mirrored.

    The mirror choice comes from ``np.random.default_rng((seed, epoch, index))``.
    """

    def __init__(self, data_dir: str | Path, *, split: str = "train", image_size: int, seed: int = 0) -> None:
        self.clips: list[Clip] = open_clips(data_dir, split)
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0
        self._clip_of, self._frame_of = frame_index(self.clips, f"{data_dir} ({split})")

    def __len__(self) -> int:
        return int(self._frame_of.size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.clips[int(self._clip_of[index])]
        image = clip.read_frame(int(self._frame_of[index]), self.image_size)
        if np.random.default_rng((self.seed, self.epoch, index)).random() < 0.5:
            image = image[:, ::-1]
        return to_tensor(np.ascontiguousarray(image))
