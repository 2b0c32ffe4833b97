"""Articulation tracks: a random utterance turned into smooth jaw/lip/voicing trajectories (stage ⓪).

An utterance is a sequence of :class:`Segment`\\ s — phonemes from a small inventory (vowels /a e i o u
ə/, bilabial closures m b p, lingual stops t d k g, fricatives f v s z ʃ h, approximants n l r w j) grouped
into syllables, words and phrases with pauses of varying length. Every phoneme has articulatory
targets for five channels (:data:`CHANNELS`): ``jaw_open``, ``lip_spread``, ``lip_round``,
``lip_closure`` and ``voicing``, all in [0, 1]. Targets a phoneme leaves unspecified (the lips of a
/t/, the jaw of an /h/) are taken over from the neighbours, and each channel is smoothed with its own
time constant, which gives anticipatory and carry-over coarticulation. Pauses close the mouth and
stop voicing; bilabial closures drive ``lip_closure`` to 1.

The same track drives the speech synthesiser (audio rate, :attr:`ArticulationTrack.samples`) and the
renderer and the ground truth (video rate, :attr:`ArticulationTrack.frames`: frame *i* holds the value
at time *i* / fps).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d

from difftalk.constants import FPS
from difftalk.io.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

CHANNELS = ("jaw_open", "lip_spread", "lip_round", "lip_closure", "voicing")
"""Names of the five articulation channels, in array order."""
JAW_OPEN, LIP_SPREAD, LIP_ROUND, LIP_CLOSURE, VOICING = range(5)

CONTROL_RATE = 1000
"""Samples per second at which targets are smoothed before interpolation to the audio rate."""
SMOOTHING_SECONDS = (0.018, 0.022, 0.026, 0.008, 0.006)
"""Gaussian smoothing σ per channel (jaw, spread, round, closure, voicing)."""

PhonemeKind = Literal["vowel", "stop", "nasal", "fricative", "approximant", "pause"]
_ = math.nan


@dataclass(frozen=True)
class Phoneme:
    """One entry of the phoneme inventory: articulatory targets plus the acoustic recipe."""

    symbol: str
    kind: PhonemeKind
    target: tuple[float, float, float, float, float]
    """Targets for :data:`CHANNELS`; NaN = unspecified (coarticulated from the neighbours)."""
    duration: float
    """Relative duration (1 = an average segment at the speaker's rate)."""
    frication_hz: float = 0.0
    """Centre of the frication noise band; 0 = no frication."""
    frication_gain: float = 0.0
    nasal: bool = False
    oral_stop: bool = False
    """Airflow is blocked (silence, or a voice bar if voiced) until a release burst."""
    aspirated: bool = False
    """Voiceless release followed by aspiration noise (p t k) or an aspirated segment (h)."""


PHONEMES: dict[str, Phoneme] = {
    p.symbol: p
    for p in (
        Phoneme("a", "vowel", (0.95, 0.35, 0.0, 0.0, 1.0), 1.15),
        Phoneme("e", "vowel", (0.55, 0.7, 0.0, 0.0, 1.0), 1.0),
        Phoneme("i", "vowel", (0.2, 1.0, 0.0, 0.0, 1.0), 0.95),
        Phoneme("o", "vowel", (0.6, 0.0, 0.75, 0.0, 1.0), 1.1),
        Phoneme("u", "vowel", (0.2, 0.0, 1.0, 0.0, 1.0), 1.0),
        Phoneme("@", "vowel", (0.4, 0.3, 0.1, 0.0, 1.0), 0.7),
        Phoneme("m", "nasal", (0.05, _, _, 1.0, 1.0), 0.85, nasal=True),
        Phoneme("b", "stop", (0.05, _, _, 1.0, 1.0), 0.7, oral_stop=True),
        Phoneme("p", "stop", (0.05, _, _, 1.0, 0.0), 0.8, oral_stop=True, aspirated=True),
        Phoneme("t", "stop", (0.15, _, _, 0.0, 0.0), 0.7, oral_stop=True, aspirated=True),
        Phoneme("d", "stop", (0.15, _, _, 0.0, 1.0), 0.6, oral_stop=True),
        Phoneme("k", "stop", (0.2, _, _, 0.0, 0.0), 0.75, oral_stop=True, aspirated=True),
        Phoneme("g", "stop", (0.2, _, _, 0.0, 1.0), 0.65, oral_stop=True),
        Phoneme("f", "fricative", (0.08, 0.3, 0.0, 0.6, 0.0), 0.9, frication_hz=5000, frication_gain=0.35),
        Phoneme("v", "fricative", (0.08, 0.3, 0.0, 0.6, 1.0), 0.75, frication_hz=5000, frication_gain=0.2),
        Phoneme("s", "fricative", (0.08, 0.6, 0.0, 0.0, 0.0), 1.0, frication_hz=6000, frication_gain=0.6),
        Phoneme("z", "fricative", (0.08, 0.6, 0.0, 0.0, 1.0), 0.8, frication_hz=6000, frication_gain=0.35),
        Phoneme("S", "fricative", (0.12, 0.0, 0.65, 0.0, 0.0), 1.0, frication_hz=3200, frication_gain=0.55),
        Phoneme("h", "fricative", (_, _, _, 0.0, 0.0), 0.7, frication_hz=1500, frication_gain=0.25, aspirated=True),
        Phoneme("n", "nasal", (0.15, _, _, 0.0, 1.0), 0.75, nasal=True),
        Phoneme("l", "approximant", (0.28, _, _, 0.0, 1.0), 0.7),
        Phoneme("r", "approximant", (0.22, 0.0, 0.45, 0.0, 1.0), 0.7),
        Phoneme("w", "approximant", (0.1, 0.0, 1.0, 0.0, 1.0), 0.65),
        Phoneme("j", "approximant", (0.12, 0.9, 0.0, 0.0, 1.0), 0.6),
        Phoneme("_", "pause", (0.0, 0.2, 0.0, 0.0, 0.0), 1.0),
    )
}
"""The phoneme inventory by symbol; ``_`` is a pause."""

_VOWELS = ("a", "e", "i", "o", "u", "@")
_VOWEL_WEIGHTS = (1.4, 1.0, 1.0, 1.0, 0.9, 0.6)
_ONSETS = ("m", "b", "p", "t", "d", "k", "g", "f", "v", "s", "z", "S", "h", "n", "l", "r", "w", "j")
_ONSET_WEIGHTS = (1.6, 1.3, 1.3, 1.0, 0.8, 0.8, 0.5, 0.8, 0.5, 1.0, 0.4, 0.5, 0.5, 1.0, 0.8, 0.6, 0.7, 0.4)
_CODAS = ("m", "p", "t", "k", "s", "n", "l", "f")
_CODA_WEIGHTS = (1.2, 0.8, 1.0, 0.7, 1.0, 1.2, 0.6, 0.5)


@dataclass(frozen=True)
class Segment:
    """One phoneme (or pause) of an utterance, in seconds from the clip start."""

    symbol: str
    start: float
    end: float
    emphasis: float = 1.0
    """Scales the jaw target of vowels (stress); 1 = neutral."""

    @property
    def phoneme(self) -> Phoneme:
        """The inventory entry of :attr:`symbol`."""
        return PHONEMES[self.symbol]


@dataclass(frozen=True)
class ArticulationTrack:
    """Articulation of one clip at audio rate and video rate.

    ``samples`` has exactly ``num_frames * sample_rate / fps`` rows, so audio and video durations agree.
    """

    segments: tuple[Segment, ...]
    samples: np.ndarray
    """``(S, 5)`` float32 in [0, 1] at ``sample_rate``, channels :data:`CHANNELS`."""
    frames: np.ndarray
    """``(N, 5)`` float32 in [0, 1]; row *i* is the value at time *i* / ``fps``."""
    sample_rate: int
    fps: float

    @property
    def num_frames(self) -> int:
        """Number of video frames N."""
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Seconds (= N / fps)."""
        return self.num_frames / self.fps


def _choice(generator: np.random.Generator, options: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=float)
    return options[int(generator.choice(len(options), p=p / p.sum()))]


def sample_utterance(generator: np.random.Generator, duration: float, speaking_rate: float) -> list[Segment]:
    """Draw a random utterance of syllables, words, phrases and pauses filling ``duration`` seconds.

    Args:
        generator: source of randomness.
        duration: clip length in seconds; the last segment is a pause ending exactly there.
        speaking_rate: syllables per second while speaking.

    Returns:
        Contiguous segments from 0 to ``duration`` (starting and ending with a pause).
    """
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    unit = 1.0 / (2.6 * speaking_rate)  # an average syllable has ≈ 2.6 relative-duration units
    segments: list[Segment] = []
    time = float(generator.uniform(0.15, 0.45))
    segments.append(Segment("_", 0.0, time))
    end_margin = 0.25

    def add(symbol: str, emphasis: float = 1.0) -> None:
        nonlocal time
        length = PHONEMES[symbol].duration * unit * float(generator.uniform(0.8, 1.25))
        if symbol in _VOWELS:
            length *= 0.75 + 0.45 * emphasis
        length = max(length, 0.045)
        segments.append(Segment(symbol, time, time + length, emphasis))
        time += length

    while time < duration - end_margin - 0.3:
        for _word in range(int(generator.integers(2, 7))):
            for _syllable in range(int(generator.integers(1, 4))):
                emphasis = float(np.clip(generator.normal(0.95, 0.12), 0.7, 1.15))
                if generator.uniform() < 0.8:
                    add(_choice(generator, _ONSETS, _ONSET_WEIGHTS))
                add(_choice(generator, _VOWELS, _VOWEL_WEIGHTS), emphasis)
                if generator.uniform() < 0.3:
                    add(_choice(generator, _CODAS, _CODA_WEIGHTS))
            if generator.uniform() < 0.35:
                pause = float(generator.uniform(0.06, 0.2))
                segments.append(Segment("_", time, time + pause))
                time += pause
            if time >= duration - end_margin - 0.3:
                break
        pause = float(generator.uniform(0.25, 0.8))
        segments.append(Segment("_", time, time + pause))
        time += pause
    # Cut at the clip end: drop what starts too late, then close with a pause.
    kept = [s for s in segments if s.end <= duration - 0.08]
    if not kept:
        return [Segment("_", 0.0, duration)]
    last = kept[-1].end
    kept.append(Segment("_", last, duration))
    return kept


def _target_matrix(segments: list[Segment], generator: np.random.Generator) -> np.ndarray:
    """``(len(segments), 5)`` targets with unspecified values filled from the neighbours."""
    targets = np.array([s.phoneme.target for s in segments], dtype=np.float64)
    for row, segment in enumerate(segments):
        phoneme = segment.phoneme
        if phoneme.kind == "vowel":
            targets[row, JAW_OPEN] = targets[row, JAW_OPEN] * segment.emphasis + generator.normal(0, 0.03)
            targets[row, LIP_SPREAD] += generator.normal(0, 0.04)
            targets[row, LIP_ROUND] += generator.normal(0, 0.04) if targets[row, LIP_ROUND] > 0 else 0.0
    index = np.arange(len(segments))
    for channel in range(targets.shape[1]):
        column = targets[:, channel]
        known = ~np.isnan(column)
        # Pauses do not pass their lip shape on to neighbouring consonants.
        donors = known & np.array([s.symbol != "_" or channel == JAW_OPEN for s in segments])
        if not donors.any():
            donors = known
        column[~known] = np.interp(index[~known], index[donors], column[donors])
    return np.clip(targets, 0.0, 1.0)


def articulate(
    segments: list[Segment],
    num_frames: int,
    generator: np.random.Generator,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
) -> ArticulationTrack:
    """Coarticulate an utterance into smooth per-sample and per-frame tracks.

    Args:
        segments: contiguous segments covering ``[0, num_frames / fps]``.
        num_frames: number of video frames N.
        generator: source of the small per-token target variations.
        fps: video frame rate.
        sample_rate: audio sample rate; ``sample_rate / fps`` must be an integer.

    Returns:
        The :class:`ArticulationTrack` (``samples``: ``(N · sample_rate / fps, 5)``, ``frames``: ``(N, 5)``).
    """
    samples_per_frame = sample_rate / fps
    if abs(samples_per_frame - round(samples_per_frame)) > 1e-9:
        raise ValueError(f"sample_rate / fps must be an integer, got {sample_rate} / {fps}")
    step = round(samples_per_frame)
    num_samples = num_frames * step
    duration = num_samples / sample_rate
    targets = _target_matrix(segments, generator)
    control_times = np.arange(math.ceil(duration * CONTROL_RATE) + 1) / CONTROL_RATE
    starts = np.array([s.start for s in segments])
    which = np.clip(np.searchsorted(starts, control_times, side="right") - 1, 0, len(segments) - 1)
    steps = targets[which]  # (C, 5) step functions
    smooth = np.empty_like(steps)
    for channel, sigma in enumerate(SMOOTHING_SECONDS):
        smooth[:, channel] = gaussian_filter1d(steps[:, channel], sigma * CONTROL_RATE, mode="nearest")
    sample_times = np.arange(num_samples) / sample_rate
    tracks = np.stack([np.interp(sample_times, control_times, smooth[:, c]) for c in range(5)], axis=1)
    tracks = np.clip(tracks, 0.0, 1.0).astype(np.float32)
    frames = np.ascontiguousarray(tracks[::step][:num_frames])
    return ArticulationTrack(tuple(segments), tracks, frames, sample_rate, fps)


def sample_articulation(
    generator: np.random.Generator,
    num_frames: int,
    speaking_rate: float,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
) -> ArticulationTrack:
    """A random utterance of ``num_frames / fps`` seconds, articulated (see :func:`articulate`)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    segments = sample_utterance(generator, num_frames / fps, speaking_rate)
    return articulate(segments, num_frames, generator, fps=fps, sample_rate=sample_rate)
