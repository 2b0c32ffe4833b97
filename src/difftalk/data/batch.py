"""Training samples and batches with named fields (never positional tuples).

Stage ③. Shapes for crop size S, 2w+1 = T audio frames, F audio features, P = 39 landmarks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class TalkingHeadBatch:
    """One sample (no batch dimension) or a collated batch (leading batch dimension B)."""

    target_frames: torch.Tensor
    """``(B, 3, S, S)`` float in [-1, 1]: the ground-truth frame."""
    masked_frames: torch.Tensor
    """``(B, 3, S, S)`` the target with its mouth region set to -1 (``data.masks``)."""
    reference_frames: torch.Tensor
    """``(B, 3, S, S)`` another frame of the same person (≥ ``reference_min_distance`` away)."""
    mouth_masks: torch.Tensor
    """``(B, 1, S, S)`` float {0, 1}: 1 = the masked mouth region."""
    landmarks: torch.Tensor
    """``(B, P, 2)`` mouth-free landmarks of the target in [-1, 1]."""
    audio_features: torch.Tensor
    """``(B, T, 16, F)`` audio feature windows of the frames around the target."""
    clip_index: torch.Tensor
    """``(B,)`` long."""
    frame_index: torch.Tensor
    """``(B,)`` long."""
    reference_index: torch.Tensor
    """``(B,)`` long."""

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TalkingHeadBatch:
        """Move every tensor to ``device`` (floating tensors also to ``dtype`` if given)."""
        moved = {}
        for field in dataclasses.fields(self):
            tensor = getattr(self, field.name)
            if dtype is not None and tensor.is_floating_point():
                moved[field.name] = tensor.to(device=device, dtype=dtype, non_blocking=True)
            else:
                moved[field.name] = tensor.to(device=device, non_blocking=True)
        return TalkingHeadBatch(**moved)

    def __len__(self) -> int:
        return int(self.target_frames.shape[0]) if self.target_frames.ndim == 4 else 1


def collate_samples(samples: Sequence[TalkingHeadBatch]) -> TalkingHeadBatch:
    """Stack single samples into a batch (the DataLoader ``collate_fn``)."""
    return TalkingHeadBatch(
        **{f.name: torch.stack([getattr(s, f.name) for s in samples]) for f in dataclasses.fields(TalkingHeadBatch)}
    )
