"""A deterministic, resumable, rank-sharded sampler (the data position is part of exact resume)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Shuffled indices per epoch from ``seed`` and the epoch, sharded over ranks, startable mid-epoch.

    Every rank gets the same number of whole batches per epoch (the tail is dropped), so a global
    step maps to (epoch, batch) without any state beyond the step counter.
    """

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.size = size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.per_rank = size // world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the dataset has {size} samples, too few for batch_size={batch_size} on {world_size} "
                "process(es); lower train.batch_size or add data"
            )
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate epoch ``epoch`` starting at its batch ``start_batch``."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[self.rank :: self.world_size][: self.per_rank]
        end = self.batches_per_epoch * self.batch_size
        yield from order[self.start_batch * self.batch_size : end].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
