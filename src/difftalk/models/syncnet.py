"""SyncNet-style audio–visual expert: a lower-face frame stack and an MFCC window → two embeddings.

Stage ④ (networks) for stage ⑦ (lip-sync metrics). Two streams (Chung & Zisserman, "Out of time",
ACCV workshops 2016): a visual stream over ``num_frames`` consecutive face crops ``(B, 3, T, h, w)``
and an audio stream over the matching MFCC window ``(B, 1, 13, 4T)`` (MFCC at 100 Hz, 4 steps per
25 fps frame). Each stream is a stack of conv blocks (conv → batch norm → ReLU [→ max pool]) followed
by a head ``Linear → BatchNorm1d → ReLU → Linear``. Close embeddings mean "in sync".

The architecture is data (:class:`SyncNetConfig`, a tuple of :class:`ConvSpec` per stream), with two
presets:

* ``syncnet_v2`` — exactly the public syncnet_python network (``SyncNetModel.S``): 224² BGR crops in
  [0, 255], 5 frames, 1024-d embeddings, 13.6 M parameters. Its released ``syncnet_v2.model`` state
  dict loads strictly through :func:`convert_syncnet_v2_state_dict` (keys ``netcnnlip.*``,
  ``netfclip.*``, ``netcnnaud.*``, ``netfcaud.*`` → ``visual_encoder.*``, ``visual_head.*``,
  ``audio_encoder.*``, ``audio_head.*``; indices are identical because the block layout is).
* ``small`` — the same two-stream idea for CPU training on 64–128 px synthetic crops: the lower half of
  a 64² crop (32×64), RGB in [-1, 1], 128-d L2-normalised embeddings, about 0.9 M parameters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from difftalk.checkpoint import (
    CheckpointError,
    load_pretrained,
    load_state_dict_strict,
    resolve_checkpoint_dir,
    save_pretrained,
)
from difftalk.config.syncnet import (  # the architecture is config data; re-exported here for existing imports
    MFCC_STEPS_PER_FRAME,
    SMALL_AUDIO,
    SMALL_VISUAL,
    SYNCNET_V2_AUDIO,
    SYNCNET_V2_VISUAL,
    ConvSpec,
    SyncNetConfig,
    conv_output_shape,
    syncnet_preset,
)

logger = logging.getLogger(__name__)

KIND = "SyncNet"

__all__ = [
    "KIND",
    "MFCC_STEPS_PER_FRAME",
    "SMALL_AUDIO",
    "SMALL_VISUAL",
    "SYNCNET_V2_AUDIO",
    "SYNCNET_V2_VISUAL",
    "ConvSpec",
    "SyncNet",
    "SyncNetConfig",
    "SyncNetOutput",
    "convert_syncnet_v2_state_dict",
    "load_syncnet",
    "load_syncnet_v2",
    "syncnet_preset",
]


def _stream(specs: tuple[ConvSpec, ...], in_channels: int, dims: int) -> nn.Sequential:
    # Any: the kernel tuples' length (2 or 3) is checked by the config, not visible to the type checker.
    conv: Any = nn.Conv3d if dims == 3 else nn.Conv2d
    norm: Any = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
    pool: Any = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in specs:
        kernel, stride, padding, pool_kernel, pool_stride, pool_padding = spec.resolved()
        layers += [conv(channels, spec.channels, kernel, stride, padding), norm(spec.channels), nn.ReLU()]
        if pool_kernel:
            layers.append(pool(pool_kernel, pool_stride, pool_padding))
        channels = spec.channels
    return nn.Sequential(*layers)


def _head(in_features: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


@dataclass
class SyncNetOutput:
    """Embeddings of a batch of visual and audio windows."""

    visual: torch.Tensor
    """``(B, D)``."""
    audio: torch.Tensor
    """``(B, D)``."""


class SyncNet(nn.Module):
    """Two-stream audio–visual sync expert built from a :class:`SyncNetConfig`."""

    KIND = KIND

    def __init__(self, config: SyncNetConfig) -> None:
        super().__init__()
        self.config = config
        visual_shape = conv_output_shape(config.visual_layers, config.visual_input_shape[1:])
        audio_shape = conv_output_shape(config.audio_layers, config.audio_input_shape[1:])
        self.visual_encoder = _stream(config.visual_layers, 3, 3)
        self.audio_encoder = _stream(config.audio_layers, 1, 2)
        visual_features = config.visual_layers[-1].channels * math.prod(visual_shape)
        audio_features = config.audio_layers[-1].channels * math.prod(audio_shape)
        self.visual_head = _head(visual_features, config.head_hidden, config.embedding_dim)
        self.audio_head = _head(audio_features, config.head_hidden, config.embedding_dim)

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Visual embeddings ``(B, D)`` of windows ``(B, 3, T, h, w)`` (see :attr:`SyncNetConfig.color`)."""
        features = self.visual_encoder(frames).flatten(1)
        embedding = self.visual_head(features)
        return F.normalize(embedding, dim=1) if self.config.normalize else embedding

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """Audio embeddings ``(B, D)`` of MFCC windows ``(B, 1, 13, 4T)``."""
        features = self.audio_encoder(mfcc).flatten(1)
        embedding = self.audio_head(features)
        return F.normalize(embedding, dim=1) if self.config.normalize else embedding

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> SyncNetOutput:
        """Both embeddings of a batch of paired windows."""
        return SyncNetOutput(self.embed_frames(frames), self.embed_audio(mfcc))

    def save_pretrained(self, directory: str | Path, extra: Mapping[str, object] | None = None) -> None:
        """Write ``weights.safetensors`` + ``config.json`` (kind ``SyncNet``)."""
        save_pretrained(self, self.config, directory, kind=KIND, extra=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> SyncNet:
        """Load a folder written by :meth:`save_pretrained` (strict), in eval mode."""
        return load_pretrained(cls, SyncNetConfig, directory, kind=KIND, device=device)


SYNCNET_V2_PREFIXES = {
    "netcnnlip.": "visual_encoder.",
    "netfclip.": "visual_head.",
    "netcnnaud.": "audio_encoder.",
    "netfcaud.": "audio_head.",
}
"""Public syncnet_python module names → ours (the indices inside each Sequential are identical)."""


def convert_syncnet_v2_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a syncnet_python ``S`` state dict onto :class:`SyncNet` (preset ``syncnet_v2``) names, strictly.

    BatchNorm ``num_batches_tracked`` counters are absent from checkpoints written by old PyTorch
    versions (as the released ``syncnet_v2.model``); they are filled with 0, exactly as PyTorch's
    own BatchNorm loader does. Every other key must be present and known.

    Raises:
        CheckpointError: an unknown key, a missing key or a shape that does not match.
    """
    model = SyncNet(syncnet_preset("syncnet_v2"))
    own = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        prefix = next((p for p in SYNCNET_V2_PREFIXES if key.startswith(p)), None)
        name = SYNCNET_V2_PREFIXES[prefix] + key[len(prefix) :] if prefix is not None else None
        if name is None or name not in own:
            unknown.append(key)
            continue
        converted[name] = tensor
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} key(s) are not part of syncnet_python's SyncNet (e.g. {sorted(unknown)[:3]}); "
            "is this a syncnet_v2.model file?"
        )
    for name in own:
        if name not in converted and name.endswith("num_batches_tracked"):
            converted[name] = torch.zeros((), dtype=torch.long)
    load_state_dict_strict(model, converted, "the syncnet_v2 state dict")
    return converted


def load_syncnet_v2(path: str | Path, device: torch.device | str = "cpu") -> SyncNet:
    """Load the public ``syncnet_v2.model`` (a pickled state dict, read weights-only) strictly, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a syncnet_python state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet weights {path} do not exist (syncnet_python's data/syncnet_v2.model)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch state dict: {exc}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    model = SyncNet(syncnet_preset("syncnet_v2"))
    model.load_state_dict(convert_syncnet_v2_state_dict(state), strict=True)
    logger.info("loaded syncnet_v2 weights from %s", path)
    return model.to(device).eval()


def load_syncnet(path: str | Path, device: torch.device | str = "cpu") -> SyncNet:
    """A SyncNet from a checkpoint folder (:meth:`SyncNet.save_pretrained`) or a ``syncnet_v2.model`` file."""
    local = Path(path)
    if local.is_file() or local.suffix == ".model":
        return load_syncnet_v2(local, device=device)
    return SyncNet.from_pretrained(resolve_checkpoint_dir(path), device=device)  # a folder or a hub repo id
