"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) without torchvision: real weights or "unavailable".

Stage ⑦. The backbone is AlexNet's convolutional part, defined here with torchvision's parameter
names so that torchvision's ImageNet file ``alexnet-owt-7be5be79.pth`` loads strictly; the five
linear heads come from the ``lpips`` package's ``weights/v0.1/alex.pth``. Neither can be downloaded
here, so :func:`load_lpips` returns None when the files are absent and callers report LPIPS as
unavailable — it is never faked with random weights.

Where the files are looked for: the ``weights_dir`` argument, ``$DIFFTALK_LPIPS_DIR``, torch hub's
checkpoint cache (``~/.cache/torch/hub/checkpoints``) and an installed ``lpips`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

BACKBONE_GLOB = "alexnet*.pth"
HEADS_NAME = "alex.pth"
CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(nn.Module):
    """torchvision ``alexnet().features`` (same indices, so its state dict loads), returning relu1-relu5."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
        )
        self.taps = (1, 4, 7, 9, 11)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class LPIPS(nn.Module):
    """Learned perceptual distance; lower is more similar. Inputs ``(B, 3, H, W)`` in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(B,)`` LPIPS distance between ``a`` and ``b``."""
        features_a = self.net((a - self.shift) / self.scale)
        features_b = self.net((b - self.shift) / self.scale)
        total = torch.zeros(a.shape[0], device=a.device, dtype=a.dtype)
        for head, fa, fb in zip(self.heads, features_a, features_b, strict=True):
            fa = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + head((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total


def _search_dirs(weights_dir: str | Path | None) -> list[Path]:
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir))
    if os.environ.get("DIFFTALK_LPIPS_DIR"):
        dirs.append(Path(os.environ["DIFFTALK_LPIPS_DIR"]))
    dirs.append(Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints")
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "weights" / "v0.1")
    return dirs


def find_lpips_weights(weights_dir: str | Path | None = None) -> tuple[Path, Path] | None:
    """(backbone file, heads file) if both are found in the search folders, else None."""
    backbone = heads = None
    for folder in _search_dirs(weights_dir):
        if not folder.is_dir():
            continue
        backbone = backbone or next(iter(sorted(folder.glob(BACKBONE_GLOB))), None)
        if heads is None and (folder / HEADS_NAME).is_file():
            heads = folder / HEADS_NAME
    return (backbone, heads) if backbone is not None and heads is not None else None


def load_lpips(weights_dir: str | Path | None = None, device: torch.device | str = "cpu") -> LPIPS | None:
    """LPIPS with real weights (strictly loaded), or None if the weight files are not on this machine."""
    found = find_lpips_weights(weights_dir)
    if found is None:
        logger.info("LPIPS weights (%s + %s) not found: LPIPS is unavailable", BACKBONE_GLOB, HEADS_NAME)
        return None
    backbone_path, heads_path = found
    model = LPIPS()
    backbone = torch.load(backbone_path, map_location="cpu", weights_only=True)
    features = {k: v for k, v in backbone.items() if k.startswith("features.")}
    extra = {k for k in backbone if not k.startswith(("features.", "classifier."))}
    if extra:
        raise ValueError(f"{backbone_path} is not a torchvision AlexNet state dict (unexpected {sorted(extra)[:3]})")
    model.net.load_state_dict(features, strict=True)
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    mapped = {f"{i}.weight": heads[f"lin{i}.model.1.weight"] for i in range(len(CHANNELS))}
    if set(heads) != {f"lin{i}.model.1.weight" for i in range(len(CHANNELS))}:
        raise ValueError(f"{heads_path} is not an LPIPS v0.1 AlexNet heads file (keys {sorted(heads)[:3]}…)")
    model.heads.load_state_dict(mapped, strict=True)
    logger.info("LPIPS loaded from %s and %s", backbone_path, heads_path)
    return model.to(device).eval()


def lpips_distance(model: LPIPS, a: torch.Tensor, b: torch.Tensor, resize: int | None = None) -> torch.Tensor:
    """``(B,)`` LPIPS between frames in [-1, 1], optionally resized first (LPIPS was tuned at 64²-256²)."""
    if resize is not None and a.shape[-1] != resize:
        a = F.interpolate(a, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
        b = F.interpolate(b, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        return model(a, b)
