"""Options of one generation run (``difftalk generate`` / ``DiffTalkPipeline``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from difftalk.constants import SILENCE_DB, SILENCE_HOLD_FRAMES, SILENCE_HOLD_MAX
from difftalk.diffusion import SAMPLERS

logger = logging.getLogger(__name__)

MIN_USEFUL_STEPS = 4
"""Below this many DDIM steps a model that was not distilled for few-step sampling may output noise (an
under-trained one does; the shipped demo model keeps most of its quality down to 2-3 steps)."""


@dataclass(frozen=True)
class GenerateOptions:
    """How a talking-head video is generated; every field has a sensible default."""

    num_steps: int | None = None
    """Sampling steps (denoiser calls per frame); None = the checkpoint's setting."""
    sampler: str | None = None
    """Update rule (``difftalk.diffusion.SAMPLERS``): ``ddim`` (the paper's), ``dpmpp`` (DPM-Solver++ 2M),
    ``unipc``, or ``lcm`` (a ``difftalk distill`` student only); None = the checkpoint's (``ddim`` for a
    model trained by ``difftalk train``)."""
    eta: float = 0.0
    """DDIM η (the other samplers ignore it)."""
    audio_guidance: float | None = None
    """Classifier-free guidance on the audio, ε̂ = ε̂_∅ + s (ε̂_a − ε̂_∅) (twice the UNet work when ≠ 1): > 1
    makes the mouth follow the audio more strongly. Needs a model trained with ``train.audio_dropout``;
    None = the checkpoint's recommended value (1 = off for a model that records none)."""
    progressive_reference: bool = True
    """Use each generated frame as the reference of the next one (paper §3.3); off = the fixed reference."""
    reference_update: Literal["composite", "latent"] = "composite"
    """What a frame passes on as the next frame's reference (with ``progressive_reference``): ``composite`` =
    the encoded real crop with only the generated mouth region pasted in (the rest is the real frame, so
    nothing drifts outside the mouth, and the reference is an encoded image like in training); ``latent``
    = the generated latent itself (no decode/encode, but off the autoencoder's manifold: on an under-trained
    model the chain can run away, see docs/results.md)."""
    reference_frame: int = 0
    """Source frame whose face is the first (or, without progressive reference, every) reference."""
    lanes: int = 1
    """Chunked progressive reference: frames are generated in this many parallel lanes (a batch), each
    progressive within its chunk. 1 = fully sequential (best continuity); more = faster on GPUs."""
    chunk: int = 16
    """Frames per lane and super-chunk."""
    length: Literal["audio", "video"] = "audio"
    """Output length: the audio's (a shorter video is looped, a longer one trimmed) or the video's (the
    audio is padded with silence or trimmed)."""
    loop: Literal["pingpong", "loop"] = "pingpong"
    """How a video shorter than the audio is extended: forwards-backwards, or from the start again."""
    temporal_smoothing: float = 0.2
    """Frame interpolation against jitter: each generated mouth is blended with the mean of its
    neighbours with this weight (0 = off, at most 0.5)."""
    noise: Literal["independent", "shared"] = "independent"
    """DDIM noise (z_T of the mouth and the re-noising of the known latents): drawn anew for every frame,
    or the same draws for every frame of the video (the mouth then changes only where the conditions
    change: less flicker)."""
    silence_db: float = SILENCE_DB
    """Frames whose audio (RMS over ±20 ms) is below this level get the features of digital silence,
    which the model has learned as a closed mouth (``-inf``: never)."""
    silence_hold: int = SILENCE_HOLD_FRAMES
    """Only frames whose neighbours within ±this many frames are silent too count as silent (4 = the
    whole 320 ms feature window is a pause): short gaps inside speech and the look-ahead to the next word
    keep their features. 0 = every quiet frame."""
    landmarks: Literal["auto", "detector", "ground_truth"] = "auto"
    """``auto``: the synthetic benchmark's ground truth when the reference is one of its videos, else dlib."""
    detector: Literal["hog", "cnn"] = "hog"
    """dlib face detector for the reference (as ``difftalk preprocess --detector``; use the one the training
    clips were prepared with, so the reference is cropped like them): ``hog`` (fast) or ``cnn`` (more
    pose-robust, much slower)."""
    colour_fix: bool = True
    """Remove the autoencoder's colour cast from generated mouths (``pipeline.colour``; measured
    outside the mouth and on the reference frame, never on the mouth being replaced). Off = the
    decoded crops as they are."""
    feather: float = 0.06
    """Soft edge of the paste-back, as a fraction of the crop size."""
    decode_window: bool = True
    """Decode only the latent window the paste-back uses (with the decoder's normalisation taken from the
    source frame's full decode, ``models.window_decode``), not the whole crop; off = the whole crop."""
    max_side: int = 2048
    """Reference frames whose longer side exceeds this are downscaled first (bounded memory/time)."""
    watermark: bool = True
    """Embed the invisible watermark in every frame (and always write provenance metadata)."""
    seed: int = 0
    crf: int = 18
    """x264 quality of the output (lower is better)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.audio_guidance is not None and not 0.0 <= self.audio_guidance <= 20.0:
            raise ValueError(f"audio_guidance must be in [0, 20] (1 = off), got {self.audio_guidance}")
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.lanes < 1 or self.chunk < 1:
            raise ValueError(f"lanes and chunk must be >= 1, got {self.lanes}, {self.chunk}")
        if not 0.0 <= self.temporal_smoothing <= 0.5:
            raise ValueError(f"temporal_smoothing must be in [0, 0.5], got {self.temporal_smoothing}")
        if self.detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {self.detector!r}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be >= 64, got {self.max_side}")
        if not 0 <= self.silence_hold <= SILENCE_HOLD_MAX:
            raise ValueError(f"silence_hold must be 0-{SILENCE_HOLD_MAX} frames, got {self.silence_hold}")


def check_num_steps(steps: int | None, recommended: int, distilled: bool = False) -> None:
    """Refuse fewer than 1 step; warn when ``steps`` is below the checkpoint's ``recommended`` count.

    Below :data:`MIN_USEFUL_STEPS` (when the checkpoint itself recommends at least that many and was not
    distilled for few-step sampling) the warning says the mouth may be noise; fewer steps than a distilled
    student was distilled for, that the mouth will be smeared; otherwise that it will be blurrier than with
    the recommended count.

    Raises:
        ValueError: ``steps`` < 1.
    """
    if steps is None:
        return
    if steps < 1:
        raise ValueError(f"the number of DDIM steps (--steps) must be >= 1, got {steps}")
    if steps >= recommended:
        return
    if steps < MIN_USEFUL_STEPS <= recommended and not distilled:
        logger.warning(
            "Sampling with %d step(s), fewer than the %d this checkpoint recommends and under %d: the mouth may come "
            "out smeared or as noise (the shipped demo model keeps most of its quality down to 2-3 DDIM steps, an "
            "under-trained model may not); use --steps %d or more (or leave --steps out)",
            steps,
            recommended,
            MIN_USEFUL_STEPS,
            recommended,
        )
    elif distilled:
        logger.warning(
            "Sampling a distilled student with %d step(s), fewer than the %d it was distilled for: expect a "
            "smeared, textured patch over the lower face (the demo student lost 4 dB of mouth PSNR at 2 steps and "
            "7 dB and half its sync at 1, docs/students_strip.png); use --steps %d (or leave --steps out)",
            steps,
            recommended,
            recommended,
        )
    else:
        logger.warning(
            "Sampling with %d steps, fewer than the %d this checkpoint recommends: expect a blurrier, less accurate "
            "mouth (leave --steps out to use the checkpoint's setting)",
            steps,
            recommended,
        )
