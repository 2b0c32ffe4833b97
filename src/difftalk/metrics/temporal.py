"""Temporal stability: adjacent-frame differences in the mouth region, and their heat map (paper Fig. 5).

Stage ⑦. For crops ``x_t`` (uint8 RGB, ``t = 0 … N−1``) the per-pixel change is
``Δ_t(p) = max(mean_c |x_t(p, c) − x_{t−1}(p, c)| − τ, 0)`` (intensity levels, 0–255), where the noise
floor ``τ`` (default 4 levels) discounts frame-independent codec noise: without it the JPEG noise of the
prepared ground-truth frames alone makes the real video look ~25 % jitterier than its own H.264 copy
(ratio 0.76 on the synthetic benchmark; 0.97 with τ = 4, while shuffled frames give ≈ 11). Then

* **jitter** = ``mean_{t ≥ 1} mean_{p ∈ M_t} Δ_t(p)`` with ``M_t`` the mouth box of frame t
  (:func:`difftalk.data.masks.mouth_box`); reported for the generated frames and for the ground truth
  of the same segment, and ``jitter_ratio = jitter / jitter_gt`` (1 = as smooth as the real video;
  flicker and shuffled frames give > 1);
* the **heat map** is ``mean_{t ≥ 1} Δ_t`` over the whole crop, written as a colour-mapped PNG
  (generated and ground truth side by side, one shared colour scale).

Streaming: only the previous frame and one ``(S, S)`` float64 sum are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from difftalk.io.image import save_image_grid


class JitterAccumulator:
    """Adjacent-frame differences of a stream of crops (all of one size).

    Args:
        noise_floor: ``τ``; per-pixel differences up to this many levels count as noise.
    """

    def __init__(self, noise_floor: float = 4.0) -> None:
        self.noise_floor = noise_floor
        self._previous: np.ndarray | None = None
        self._heat: np.ndarray | None = None
        self._mouth_sum = 0.0
        self.num_differences = 0

    def add(self, frames: Sequence[np.ndarray], mouth_boxes: Sequence[tuple[int, int, int, int]]) -> None:
        """Append consecutive uint8 ``(S, S, 3)`` crops with their mouth boxes ``(top, bottom, left, right)``."""
        if len(frames) != len(mouth_boxes):
            raise ValueError("frames and mouth_boxes must have the same length")
        for frame, box in zip(frames, mouth_boxes, strict=True):
            current = np.asarray(frame, dtype=np.int16)
            if self._previous is not None:
                if current.shape != self._previous.shape:
                    raise ValueError(f"frame size changed from {self._previous.shape} to {current.shape}")
                change = np.maximum(np.abs(current - self._previous).mean(axis=2) - self.noise_floor, 0.0)
                if self._heat is None:
                    self._heat = np.zeros(change.shape, dtype=np.float64)
                self._heat += change
                top, bottom, left, right = box
                self._mouth_sum += float(change[top:bottom, left:right].mean())
                self.num_differences += 1
            self._previous = current

    @property
    def jitter(self) -> float | None:
        """Mean absolute adjacent-frame difference in the mouth region (0–255), None before two frames."""
        return self._mouth_sum / self.num_differences if self.num_differences else None

    @property
    def heat_map(self) -> np.ndarray | None:
        """``(S, S)`` float64 mean absolute adjacent-frame difference per pixel (0–255)."""
        return self._heat / self.num_differences if self._heat is not None and self.num_differences else None


def temporal_jitter(
    frames: Sequence[np.ndarray], mouth_boxes: Sequence[tuple[int, int, int, int]], noise_floor: float = 4.0
) -> float | None:
    """Mouth-region jitter of a short frame sequence (see the module docstring)."""
    accumulator = JitterAccumulator(noise_floor)
    accumulator.add(frames, mouth_boxes)
    return accumulator.jitter


def save_heat_maps(
    path: str | Path, maps: Sequence[np.ndarray], labels: Sequence[str], scale: int = 2, vmax: float | None = None
) -> Path:
    """Write heat maps ``(S, S)`` (all one size) side by side as one PNG (inferno, shared scale 0 … vmax).

    Args:
        path: output ``.png``.
        maps: per-pixel mean differences (0–255 levels).
        labels: a caption per map, drawn in its top-left corner.
        scale: integer upscaling of each map (nearest neighbour).
        vmax: top of the colour scale; default the 99th percentile over all maps.
    """
    if not maps or len(maps) != len(labels):
        raise ValueError("save_heat_maps needs one label per map and at least one map")
    top = vmax if vmax is not None else float(np.percentile(np.concatenate([m.ravel() for m in maps]), 99))
    top = max(top, 1e-6)
    tiles = []
    for heat, label in zip(maps, labels, strict=True):
        levels = np.clip(heat / top * 255.0, 0, 255).astype(np.uint8)
        tile = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
        tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    return save_image_grid(path, [tiles])
