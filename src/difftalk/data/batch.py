"""Training samples and batches with named fields (never positional tuples).

Stage ③. Shapes for crop size S, latent C×s×s, 2w+1 = T audio frames, F audio features, P = 39
landmarks. A sample carries either frames (the default) or, when the dataset reads a latent cache,
the three latents instead; the other group is None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class TalkingHeadBatch:
    """One sample (no batch dimension) or a collated batch (leading batch dimension B)."""

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
    target_frames: torch.Tensor | None = None
    """``(B, 3, S, S)`` float in [-1, 1]: the ground-truth frame."""
    masked_frames: torch.Tensor | None = None
    """``(B, 3, S, S)`` the target with its mouth region set to -1 (``data.masks``)."""
    reference_frames: torch.Tensor | None = None
    """``(B, 3, S, S)`` another frame of the same person (≥ ``reference_min_distance`` away)."""
    mouth_masks: torch.Tensor | None = None
    """``(B, 1, S, S)`` float {0, 1}: 1 = the masked mouth region (in latent-cache mode too)."""
    target_latents: torch.Tensor | None = None
    """``(B, C, s, s)`` cached E(target) (latent-cache mode)."""
    masked_latents: torch.Tensor | None = None
    """``(B, C, s, s)`` cached E(masked target)."""
    reference_latents: torch.Tensor | None = None
    """``(B, C, s, s)`` cached E(reference)."""
    mfcc: torch.Tensor | None = None
    """``(B, 1, 13, 4T)`` the MFCC window of a window sample (``train.windows``: T consecutive frames)."""

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TalkingHeadBatch:
        """Move every tensor to ``device`` (floating tensors also to ``dtype`` if given)."""
        moved: dict[str, torch.Tensor | None] = {}
        for field in dataclasses.fields(self):
            tensor = getattr(self, field.name)
            if tensor is None:
                moved[field.name] = None
            elif dtype is not None and tensor.is_floating_point():
                moved[field.name] = tensor.to(device=device, dtype=dtype, non_blocking=True)
            else:
                moved[field.name] = tensor.to(device=device, non_blocking=True)
        return TalkingHeadBatch(**moved)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self.landmarks.shape[0]) if self.landmarks.ndim == 3 else 1


def collate_samples(samples: Sequence[TalkingHeadBatch]) -> TalkingHeadBatch:
    """Stack single samples into a batch (the DataLoader ``collate_fn``); None fields stay None."""
    fields = {}
    for field in dataclasses.fields(TalkingHeadBatch):
        values = [getattr(s, field.name) for s in samples]
        fields[field.name] = None if values[0] is None else torch.stack(values)
    return TalkingHeadBatch(**fields)  # type: ignore[arg-type]
