"""Articulation probe: a small CNN reading the 5 articulation channels off a mouth crop (synthetic data).

Stage ⑦. The synthetic benchmark knows, per frame, the articulation that drove both the speech and
the rendered mouth (``articulation.npy``: jaw_open, lip_spread, lip_round, lip_closure, voicing, all in
[0, 1]). The probe is trained on ground-truth mouth patches of the dataset's ``train`` split (the
``mouth_box`` region of each crop, resized to ``height × width``), validated on the ``test`` split and
cached as a checkpoint folder. Applied to generated frames it measures whether the generated mouth
says what the audio says:

* ``articulation_mae = mean_t mean_c |f(x̂_t)_c − a_tc|`` over the 5 channels (lower is better),
* ``articulation_mae_<channel>``: the same per channel,
* ``jaw_corr``: Pearson correlation over frames of predicted and true ``jaw_open`` (higher is better).

``a`` is the articulation of the *driving* audio's clip. The probe's own error on ground-truth frames
(the floor of the metric) is reported beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from difftalk.checkpoint import CheckpointError, load_pretrained, save_pretrained
from difftalk.config.fields import to_dict
from difftalk.data.clips import Clip, DatasetError, open_clips
from difftalk.data.masks import mouth_box

logger = logging.getLogger(__name__)

KIND = "ArticulationProbe"
CHANNELS = ("jaw_open", "lip_spread", "lip_round", "lip_closure", "voicing")


@dataclass(frozen=True)
class ProbeConfig:
    """Architecture and training of the articulation probe."""

    height: int = 32
    """Mouth patch height in pixels."""
    width: int = 48
    """Mouth patch width in pixels."""
    channels: tuple[int, ...] = (16, 32, 64)
    """Output channels of the stride-2 conv layers."""
    hidden: int = 64
    """Width of the hidden fully connected layer."""
    steps: int = 600
    """Optimiser steps."""
    batch_size: int = 64
    learning_rate: float = 2e-3
    max_samples: int = 6000
    """Training patches (frames are subsampled evenly across the train clips)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"ProbeConfig height/width must be >= 8, got {self.height}×{self.width}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError("ProbeConfig.channels must be a non-empty tuple of positive ints")
        if self.steps < 1 or self.batch_size < 2 or self.max_samples < 2:
            raise ValueError("ProbeConfig steps >= 1, batch_size >= 2 and max_samples >= 2 are required")


class ArticulationProbe(nn.Module):
    """Mouth patches ``(B, 3, h, w)`` in [-1, 1] → articulation ``(B, 5)`` in [0, 1]."""

    KIND = KIND

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels, height, width = 3, config.height, config.width
        for out in config.channels:
            layers += [nn.Conv2d(channels, out, 3, 2, 1), nn.BatchNorm2d(out), nn.ReLU()]
            channels, height, width = out, (height + 1) // 2, (width + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(channels * height * width, config.hidden), nn.ReLU(), nn.Linear(config.hidden, len(CHANNELS))
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, 5)`` predicted articulation in [0, 1]."""
        return torch.sigmoid(self.head(self.features(patches).flatten(1)))


def mouth_patch(frame: np.ndarray, landmarks: np.ndarray, config: ProbeConfig) -> np.ndarray:
    """The ``mouth_box`` region of a uint8 ``(S, S, 3)`` crop, resized to uint8 ``(h, w, 3)``.

    Args:
        frame: the crop.
        landmarks: ``(68, 2)`` crop-pixel landmarks of that frame (the clip's stored ones).
        config: gives the patch size.
    """
    top, bottom, left, right = mouth_box(np.asarray(landmarks, dtype=np.float32), frame.shape[0])
    region = frame[top:bottom, left:right]
    return cv2.resize(region, (config.width, config.height), interpolation=cv2.INTER_AREA)


def _to_tensor(patches: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2))).float() / 127.5 - 1.0


@torch.no_grad()
def predict_articulation(probe: ArticulationProbe, patches: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """``(N, 5)`` float32 articulation of uint8 ``(h, w, 3)`` mouth patches."""
    if not len(patches):
        return np.zeros((0, len(CHANNELS)), dtype=np.float32)
    probe.eval()
    device = next(probe.parameters()).device
    array = np.stack(list(patches))
    out = [probe(_to_tensor(array[i : i + batch_size]).to(device)).cpu() for i in range(0, len(array), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


@dataclass
class ArticulationError:
    """Articulation error of predicted against true articulation (see the module docstring)."""

    mae: float
    per_channel: dict[str, float]
    jaw_corr: float | None
    """None when either jaw track is constant."""

    def as_dict(self, prefix: str = "articulation_") -> dict[str, float | None]:
        """Flat ``{articulation_mae, articulation_mae_<channel>, jaw_corr}``."""
        out: dict[str, float | None] = {f"{prefix}mae": self.mae}
        out.update({f"{prefix}mae_{name}": value for name, value in self.per_channel.items()})
        out["jaw_corr"] = self.jaw_corr
        return out


def articulation_error(predicted: np.ndarray, truth: np.ndarray) -> ArticulationError:
    """Error of ``(N, 5)`` predicted against ``(N, 5)`` true articulation."""
    if predicted.shape != truth.shape or predicted.ndim != 2 or predicted.shape[1] != len(CHANNELS):
        raise ValueError(f"expected two (N, 5) arrays, got {predicted.shape} and {truth.shape}")
    if predicted.shape[0] == 0:
        raise ValueError("articulation_error needs at least one frame")
    error = np.abs(predicted.astype(np.float64) - truth.astype(np.float64))
    jaw_p, jaw_t = predicted[:, 0].astype(np.float64), truth[:, 0].astype(np.float64)
    corr = None
    if len(jaw_p) > 1 and jaw_p.std() > 1e-8 and jaw_t.std() > 1e-8:
        corr = float(np.corrcoef(jaw_p, jaw_t)[0, 1])
    return ArticulationError(
        mae=float(error.mean()),
        per_channel={name: float(error[:, i].mean()) for i, name in enumerate(CHANNELS)},
        jaw_corr=corr,
    )


def collect_patches(clips: Sequence[Clip], config: ProbeConfig, max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth mouth patches ``(M, h, w, 3)`` uint8 and articulation ``(M, 5)`` of evenly spaced frames."""
    usable = [c for c in clips if c.articulation is not None]
    total = sum(len(c.valid_frames) for c in usable)
    if total == 0:
        raise DatasetError("no clip with articulation.npy and face frames: the articulation probe needs synthetic data")
    stride = max(1, int(np.ceil(total / max_samples)))
    patches, targets = [], []
    for clip in usable:
        assert clip.articulation is not None
        for index in clip.valid_frames[::stride]:
            patches.append(mouth_patch(clip.read_frame(int(index)), clip.landmarks_at(int(index)), config))
            targets.append(clip.articulation[int(index)])
    return np.stack(patches), np.stack(targets).astype(np.float32)


@dataclass
class ProbeTrainResult:
    """A trained probe and how well it reads ground truth."""

    probe: ArticulationProbe
    validation: dict[str, float | None]
    """:class:`ArticulationError` on held-out ground-truth frames (``test`` split, else the training set)."""


def train_articulation_probe(
    data_dir: str | Path, config: ProbeConfig | None = None, generator: torch.Generator | None = None
) -> ProbeTrainResult:
    """Train the probe on the ``train`` split's ground-truth mouth patches; validate on ``test``.

    Args:
        data_dir: a prepared synthetic dataset (clips with ``articulation.npy``).
        config: probe settings.
        generator: source of the initialisation and batch order (default: seeded with ``config.seed``).

    Raises:
        DatasetError: the dataset has no articulation ground truth.
    """
    config = config or ProbeConfig()
    generator = generator or torch.Generator().manual_seed(config.seed)
    patches, targets = collect_patches(open_clips(data_dir, "train"), config, config.max_samples)
    try:
        val_patches, val_targets = collect_patches(open_clips(data_dir, "test"), config, config.max_samples // 4)
    except DatasetError:
        val_patches, val_targets = patches, targets
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        probe = ArticulationProbe(config)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.steps)
    inputs, labels = _to_tensor(patches), torch.from_numpy(targets)
    probe.train()
    for _ in range(config.steps):
        index = torch.randint(0, len(inputs), (config.batch_size,), generator=generator)
        loss = F.mse_loss(probe(inputs[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    probe.eval()
    validation = articulation_error(predict_articulation(probe, list(val_patches)), val_targets).as_dict()
    logger.info("articulation probe trained on %d patches: %s", len(patches), validation)
    return ProbeTrainResult(probe, validation)


def probe_fingerprint(data_dir: str | Path, config: ProbeConfig) -> str:
    """12 hex digits identifying (probe config, dataset clip list)."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text(encoding="utf-8"))
    clips = [(c["name"], c.get("split"), c.get("num_frames")) for c in manifest["clips"]]
    text = json.dumps({"config": to_dict(config), "clips": clips}, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def load_or_train_probe(
    data_dir: str | Path, cache_dir: str | Path | None = None, config: ProbeConfig | None = None
) -> ArticulationProbe | None:
    """The cached probe for ``data_dir`` (trained on first use), or None if the data has no articulation.

    The cache is ``<cache_dir or DATA_DIR/cache>/articulation_probe-<fingerprint>`` (a checkpoint folder).
    """
    config = config or ProbeConfig()
    data_dir = Path(data_dir)
    folder = Path(cache_dir or data_dir / "cache") / f"articulation_probe-{probe_fingerprint(data_dir, config)}"
    if folder.is_dir():
        try:
            return load_pretrained(ArticulationProbe, ProbeConfig, folder, kind=KIND)
        except CheckpointError as exc:
            logger.warning("ignoring damaged probe cache %s (%s); retraining", folder, exc)
    try:
        result = train_articulation_probe(data_dir, config)
    except DatasetError as exc:
        logger.info("articulation probe unavailable: %s", exc)
        return None
    save_pretrained(result.probe, config, folder, kind=KIND, extra={"validation": result.validation})
    return result.probe.eval()
