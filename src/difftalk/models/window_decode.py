"""Decoding only the generated window of a latent map (stage ⑥ speed-up).

After masked sampling only the mouth window of a crop's latents differs from the source frame's own
latents, and only the pasted region of the decoded crop is used. Decoding the whole map every frame
(the largest cost of one-step generation on a CPU) is therefore mostly spent on pixels that are thrown
away. This module decodes a window of rows and columns of the latent map instead, so that its pixels
come close to a full decode of the same latents:

* the decoder's input convolution and its middle block (self-attention over the whole map, GroupNorm)
  run on the **whole** latent map, as in a full decode: they are the cheap, low-resolution part;
* the up-sampling blocks and the output head run on the window grown by ``margin`` latent cells on
  each side (their convolutions see a zero border there instead of the neighbours: the margin absorbs
  that), and the margin is cut off afterwards;
* their GroupNorms normalise with **statistics recorded during a full decode of another frame of the
  same face** (:func:`decode_recording_norms`), not with the window's: a GroupNorm normalises over the
  whole image, and the window alone has other statistics. The pipeline takes the fixed reference frame,
  which it decodes once per video for the colour correction anyway: an aligned crop of the same face,
  whose whole-image statistics are close to the generated frame's. (Not the frame's own source crop: in
  a self-driven benchmark that is the ground truth, and the statistics of its decode would carry a
  little of the true mouth into the result.)

Works on diffusers' ``VQModel`` decoders with GroupNorm (``norm_type="group"``), the layout of the
project's autoencoders and of LDM's converted vq-f4/f8; :func:`supports_window_decode` says whether a
model qualifies (callers fall back to a full decode otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from difftalk.models.autoencoder import Autoencoder

Window = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)`` of the latent map, end-exclusive."""


def _window_norms(autoencoder: Autoencoder) -> list[nn.GroupNorm]:
    """The GroupNorms that run on the window, in execution order (up blocks, then the output norm)."""
    decoder = autoencoder.vq.decoder
    return [m for m in decoder.up_blocks.modules() if isinstance(m, nn.GroupNorm)] + [decoder.conv_norm_out]


def supports_window_decode(autoencoder: Autoencoder) -> bool:
    """Whether :func:`decode_window` applies (a VQModel decoder with GroupNorm everywhere on the window path)."""
    vq = autoencoder.vq
    if getattr(vq.config, "norm_type", "group") != "group" or getattr(vq.config, "lookup_from_codebook", False):
        return False
    decoder = getattr(vq, "decoder", None)
    needed = ("conv_in", "mid_block", "up_blocks", "conv_norm_out", "conv_act", "conv_out")
    if decoder is None or not all(hasattr(decoder, name) for name in needed):
        return False
    # attention in an up block would be global over the window only
    attention = any("Attention" in type(m).__name__ for m in decoder.up_blocks.modules())
    return isinstance(decoder.conv_norm_out, nn.GroupNorm) and not attention


def _stats(module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``(B, G, 2)`` float32 mean and variance of ``x`` per sample and group, as GroupNorm computes them."""
    grouped = x.float().reshape(x.shape[0], module.num_groups, -1)
    return torch.stack([grouped.mean(-1), grouped.var(-1, unbiased=False)], dim=-1)


def _normalise(module: nn.GroupNorm, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """GroupNorm of ``x`` ``(B, C, H, W)`` with given ``(B, G, 2)`` statistics instead of its own: one
    per-channel scale and shift, applied in ``x``'s dtype."""
    batch, channels = x.shape[:2]
    per_group = channels // module.num_groups
    mean = stats[..., 0].repeat_interleave(per_group, dim=1)  # (B, C)
    scale = torch.rsqrt(stats[..., 1] + module.eps).repeat_interleave(per_group, dim=1)
    if module.affine:
        scale = scale * module.weight.float()
        shift = module.bias.float() - mean * scale
    else:
        shift = -mean * scale
    shape = (batch, channels) + (1,) * (x.ndim - 2)
    return torch.addcmul(shift.to(x.dtype).view(shape), x, scale.to(x.dtype).view(shape))


@contextmanager
def _patched(
    norms: list[nn.GroupNorm], replace: Callable[[int, nn.GroupNorm, torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Temporarily route each module's forward through ``replace(index, module, x)``."""
    originals = [m.forward for m in norms]
    try:
        for index, module in enumerate(norms):
            module.forward = functools.partial(replace, index, module)  # type: ignore[method-assign]
        yield
    finally:
        for module, original in zip(norms, originals, strict=True):
            module.forward = original  # type: ignore[method-assign]


def _quantised(autoencoder: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """What ``VQModel.decode`` feeds its decoder: the (optionally quantised) latents after ``post_quant_conv``."""
    vq = autoencoder.vq
    quant = vq.quantize(latents)[0] if autoencoder.config.quantize else latents
    return vq.post_quant_conv(quant)


def decode_recording_norms(autoencoder: Autoencoder, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A full decode that also returns the statistics :func:`decode_window` normalises with.

    Args:
        autoencoder: the frozen autoencoder (see :func:`supports_window_decode`).
        latents: ``(B, C, h, w)`` unscaled latents (as :meth:`Autoencoder.decode` takes them).

    Returns:
        (``(B, 3, S, S)`` frames exactly as :meth:`Autoencoder.decode` gives them, not clamped;
        ``(B, K, 2)`` float32 statistics, K = the groups of every window GroupNorm together).
    """
    norms = _window_norms(autoencoder)
    recorded: dict[int, torch.Tensor] = {}

    def record(index: int, module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        recorded[index] = _stats(module, x)
        return F.group_norm(x, module.num_groups, module.weight, module.bias, module.eps)

    with _patched(norms, record):
        frames = autoencoder.decode(latents)
    return frames, torch.cat([recorded[index] for index in range(len(norms))], dim=1)


def decode_window(
    autoencoder: Autoencoder, latents: torch.Tensor, norm_stats: torch.Tensor, window: Window, margin: int
) -> torch.Tensor:
    """Decode the pixels of ``window`` of ``latents`` (see the module docstring).

    Args:
        autoencoder: the frozen autoencoder (see :func:`supports_window_decode`).
        latents: ``(B, C, h, w)`` unscaled latents.
        norm_stats: ``(B, K, 2)`` from :func:`decode_recording_norms` (of the same face: see the module docstring).
        window: latent rows and columns to decode, ``(row0, row1, col0, col1)``, end-exclusive.
        margin: latent cells decoded around the window and then discarded.

    Returns:
        ``(B, 3, (row1 − row0)·f, (col1 − col0)·f)`` pixels, not clamped.

    Raises:
        ValueError: an empty or out-of-range window, or statistics of another shape.
    """
    height, width = latents.shape[-2:]
    row0, row1, col0, col1 = window
    if not (0 <= row0 < row1 <= height and 0 <= col0 < col1 <= width):
        raise ValueError(f"window {window} is empty or outside the {height}×{width} latent map")
    norms = _window_norms(autoencoder)
    groups = [m.num_groups for m in norms]
    if norm_stats.shape != (latents.shape[0], sum(groups), 2):
        raise ValueError(
            f"norm_stats {tuple(norm_stats.shape)} do not fit: expected {(latents.shape[0], sum(groups), 2)}"
        )
    decoder = autoencoder.vq.decoder
    r0, r1 = max(0, row0 - margin), min(height, row1 + margin)
    c0, c1 = max(0, col0 - margin), min(width, col1 + margin)
    sample = decoder.mid_block(decoder.conv_in(_quantised(autoencoder, latents)), None)[:, :, r0:r1, c0:c1]
    per_module = torch.split(norm_stats.to(latents.device), groups, dim=1)

    def frozen(index: int, module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        return _normalise(module, x, per_module[index])

    with _patched(norms, frozen):
        upscale_dtype = next(iter(decoder.up_blocks.parameters())).dtype
        sample = sample.to(upscale_dtype)
        for up_block in decoder.up_blocks:
            sample = up_block(sample, None)
        sample = decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(sample)))
    factor = sample.shape[-1] // (c1 - c0)
    top, left = (row0 - r0) * factor, (col0 - c0) * factor
    return sample[:, :, top : top + (row1 - row0) * factor, left : left + (col1 - col0) * factor]
