"""Latent cache: the frozen autoencoder's latents of every frame, computed once per autoencoder.

Used by training (it needs the model, so it lives beside ``train``, not in ``data``). Diffusion
training encodes three images per sample (target, masked target, reference) with a frozen
encoder; on a CPU that costs more than the UNet step. All three are deterministic functions of
the dataset's frames (the masked target depends only on the frame and its landmarks; the
reference is another frame), so each clip gets ``latents/<fingerprint>.npy`` of shape
``(N, 2, C, h, w)`` float16: ``[:, 0]`` = E(frame), ``[:, 1]`` = E(masked frame). The fingerprint
hashes the autoencoder's weights and crop size, so a new autoencoder never reads stale latents.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from difftalk.data.clips import Clip
from difftalk.data.masks import apply_mask, mouth_mask
from difftalk.data.transforms import to_tensor
from difftalk.models.autoencoder import Autoencoder

logger = logging.getLogger(__name__)


def autoencoder_fingerprint(autoencoder: Autoencoder) -> str:
    """12 hex digits identifying the autoencoder's weights and crop size."""
    digest = hashlib.sha256(str(autoencoder.config.image_size).encode())
    for name, tensor in sorted(autoencoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


@torch.no_grad()
def build_latent_cache(
    clips: list[Clip],
    autoencoder: Autoencoder,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> str:
    """Write the cache of every clip that lacks it; returns the fingerprint (resumable per clip)."""
    fingerprint = autoencoder_fingerprint(autoencoder)
    size = autoencoder.config.image_size
    latent = autoencoder.config.latent_size
    channels = autoencoder.config.latent_channels
    autoencoder = autoencoder.to(device).eval()
    todo = [c for c in clips if not c.latents_path(fingerprint).is_file()]
    total = sum(len(c.valid_frames) for c in todo)
    bar = tqdm(total=total, desc="caching latents", unit="frame", disable=not progress)
    for clip in todo:
        if clip.latents_path(fingerprint).is_file():  # written meanwhile by another run on the same data
            bar.update(len(clip.valid_frames))
            continue
        out = np.zeros((clip.num_frames, 2, channels, latent, latent), dtype=np.float16)
        frames = clip.valid_frames
        for start in range(0, len(frames), batch_size):
            indices = frames[start : start + batch_size]
            images = to_tensor(np.stack([clip.read_frame(int(i), size) for i in indices])).to(device)
            masks = torch.from_numpy(np.stack([mouth_mask(clip.landmarks_at(int(i), size), size) for i in indices]))
            masked = apply_mask(images, masks[:, None].to(device))
            out[indices, 0] = autoencoder.encode(images).float().cpu().numpy()
            out[indices, 1] = autoencoder.encode(masked).float().cpu().numpy()
            bar.update(len(indices))
        path = clip.latents_path(fingerprint)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    bar.close()
    if todo:
        logger.info("cached latents of %d frames in %d clips (%s)", total, len(todo), fingerprint)
    return fingerprint
