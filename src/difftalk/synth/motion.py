"""Head motion, blinks, gaze and brow movement of a synthetic clip (stage ⓪).

Everything that moves besides the mouth: a smooth random head pose (band-limited noise whose
amplitudes depend on the identity's motion style), blinks as a random process (fast close, slower
open, every few seconds), gaze shifts (saccades held for a while) and small brow raises. None of it
depends on the audio, so the mouth is the only thing the speech determines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from difftalk.synth.geometry import FaceState, HeadPose
from difftalk.synth.identity import Identity

logger = logging.getLogger(__name__)

# (yaw°, pitch°, roll°, scale, tx, ty) standard deviations per motion style.
_STYLE_AMPLITUDES = {
    "calm": (2.5, 2.0, 1.5, 0.012, 0.008, 0.006),
    "nodding": (2.5, 4.5, 1.5, 0.012, 0.008, 0.012),
    "lively": (5.0, 3.5, 3.0, 0.02, 0.016, 0.01),
}


@dataclass(frozen=True)
class MotionTrack:
    """Per-frame non-mouth state of a clip (N frames)."""

    pose: np.ndarray
    """``(N, 6)`` float64: yaw, pitch, roll (degrees), scale, tx, ty (fractions of the frame)."""
    eye_open: np.ndarray
    """``(N,)`` in [0, 1]; 0 = eyes shut."""
    gaze: np.ndarray
    """``(N, 2)`` in [-1, 1]."""
    brow_raise: np.ndarray
    """``(N,)`` in [-1, 1]."""

    @property
    def num_frames(self) -> int:
        """N."""
        return int(self.eye_open.shape[0])

    def state(self, index: int, articulation: np.ndarray) -> FaceState:
        """The :class:`FaceState` of frame ``index`` with its ``(5,)`` articulation."""
        yaw, pitch, roll, scale, tx, ty = (float(v) for v in self.pose[index])
        values = tuple(float(v) for v in articulation)
        return FaceState(
            articulation=(values[0], values[1], values[2], values[3], values[4]),
            eye_open=float(self.eye_open[index]),
            gaze=(float(self.gaze[index, 0]), float(self.gaze[index, 1])),
            brow_raise=float(self.brow_raise[index]),
            pose=HeadPose(yaw=yaw, pitch=pitch, roll=roll, scale=scale, tx=tx, ty=ty),
        )


def _smooth_noise(generator: np.random.Generator, num_frames: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance smooth noise ``(num_frames,)``."""
    pad = int(3 * sigma_frames)
    noise = gaussian_filter1d(generator.normal(0.0, 1.0, num_frames + 2 * pad), sigma_frames)[pad : pad + num_frames]
    # Gaussian-filtered unit white noise has std 1 / sqrt(2 sqrt(pi) sigma).
    return noise * np.sqrt(2.0 * np.sqrt(np.pi) * sigma_frames)


def _blink_curve(generator: np.random.Generator, num_frames: int, fps: float, interval: float) -> np.ndarray:
    """Eye openness ``(num_frames,)``: 1 with blinks (≈ 70 ms closing, 130 ms opening)."""
    times = np.arange(num_frames) / fps
    openness = np.ones(num_frames)
    time = float(generator.uniform(0.3, interval))
    while time < times[-1] + 0.2:
        close, reopen = float(generator.uniform(0.05, 0.09)), float(generator.uniform(0.1, 0.18))
        hold = float(generator.uniform(0.0, 0.04))
        depth = float(generator.uniform(0.85, 1.0))
        rel = times - time
        shape = np.where(
            rel < 0,
            0.0,
            np.where(
                rel < close,
                rel / close,
                np.where(rel < close + hold, 1.0, np.clip(1.0 - (rel - close - hold) / reopen, 0.0, 1.0)),
            ),
        )
        openness = np.minimum(openness, 1.0 - depth * shape)
        time += max(0.4, float(generator.exponential(interval - 0.3)) + 0.3)
    baseline = 0.94 + 0.05 * np.tanh(_smooth_noise(generator, num_frames, 2.0 * fps))
    return np.clip(openness * baseline, 0.0, 1.0)


def _gaze(generator: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
    """Saccades: gaze targets held 0.4-2.5 s, each shift lasting ≈ 2 frames."""
    gaze = np.zeros((num_frames, 2))
    start = 0
    while start < num_frames:
        length = max(1, int(generator.uniform(0.4, 2.5) * fps))
        target = generator.normal(0.0, [0.25, 0.12]) if generator.uniform() < 0.6 else np.zeros(2)
        gaze[start : start + length] = np.clip(target, -0.8, 0.8)
        start += length
    return gaussian_filter1d(gaze, 0.8, axis=0, mode="nearest")


def sample_motion(identity: Identity, num_frames: int, generator: np.random.Generator, fps: float) -> MotionTrack:
    """Draw the head motion, blinks, gaze and brows of one clip.

    Args:
        identity: gives the motion style, its amplitude and the mean blink interval.
        num_frames: N.
        generator: source of randomness.
        fps: frame rate (sets the time scales).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    amplitudes = np.asarray(_STYLE_AMPLITUDES[identity.motion_style]) * identity.motion_amplitude
    sigmas = (0.7, 0.45 if identity.motion_style == "nodding" else 0.6, 0.9, 1.2, 1.0, 0.8)
    pose = np.stack(
        [_smooth_noise(generator, num_frames, s * fps) * a for s, a in zip(sigmas, amplitudes, strict=True)], axis=1
    )
    # Keep the head inside the frame however the noise falls.
    limits = amplitudes * 2.5
    pose = np.clip(pose, -limits, limits)
    pose[:, 3] += 1.0
    brow = np.clip(0.5 * _smooth_noise(generator, num_frames, 0.5 * fps), -1.0, 1.0)
    return MotionTrack(
        pose=pose,
        eye_open=_blink_curve(generator, num_frames, fps, identity.blink_interval),
        gaze=_gaze(generator, num_frames, fps),
        brow_raise=brow,
    )
