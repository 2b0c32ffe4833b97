"""Write the synthetic talking-face benchmark to disk (stage ⓪; the ``difftalk synth`` command).

:func:`run_synth` makes ``identities × clips_per_identity`` clips and writes the layout of
``docs/formats.md`` ("Synthetic benchmark"): ``synth.json`` (settings, seed, identity split),
``videos/<clip>.mp4`` (H.264 + AAC, 25 fps) and ``ground_truth/<clip>/`` (``landmarks.npy``,
``articulation.npy``, ``identity.json``, ``audio.wav``). Everything is deterministic from the seed:
identity *k* draws from its own generator (``SeedSequence([seed, k])``), so it is the same however
many identities are made, and each clip from ``SeedSequence([seed, k, 1, clip])``. Finished clips are
skipped, so an interrupted run resumes; files are written under temporary names and renamed.
:func:`make_contact_sheet` renders a grid of identities × mouth states for a quick visual check.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from difftalk.io.audio import SAMPLE_RATE, save_wav
from difftalk.io.image import save_image_grid
from difftalk.io.video import VideoWriter
from difftalk.synth.articulation import CHANNELS, FPS, ArticulationTrack, sample_articulation
from difftalk.synth.geometry import FaceState
from difftalk.synth.identity import Identity, sample_identity
from difftalk.synth.motion import MotionTrack, sample_motion
from difftalk.synth.render import FaceRenderer, RenderedFrame
from difftalk.synth.speech import synthesize_speech

logger = logging.getLogger(__name__)

FORMAT = "difftalk-synth"
VERSION = 1
GROUND_TRUTH_FILES = ("landmarks.npy", "articulation.npy", "identity.json", "audio.wav")
_SPLIT_STREAM = 0x5B117
"""Extra entropy word of the generator that draws the train/test split."""
_CONTACT_STATES: tuple[tuple[str, tuple[float, float, float, float, float], float], ...] = (
    ("closed", (0.0, 0.2, 0.0, 0.0, 0.0), 1.0),
    ("half", (0.5, 0.35, 0.0, 0.0, 1.0), 1.0),
    ("wide", (1.0, 0.35, 0.0, 0.0, 1.0), 1.0),
    ("rounded", (0.45, 0.0, 1.0, 0.0, 1.0), 1.0),
    ("spread", (0.25, 1.0, 0.0, 0.0, 1.0), 1.0),
    ("blink", (0.0, 0.2, 0.0, 0.0, 0.0), 0.0),
)
"""Columns of the contact sheet: name, articulation, eye openness."""


def identity_name(index: int) -> str:
    """``id0003`` for index 3."""
    return f"id{index:04d}"


def clip_name(identity_index: int, clip_index: int) -> str:
    """``id0003_c00`` for identity 3, clip 0."""
    return f"{identity_name(identity_index)}_c{clip_index:02d}"


def identity_for(seed: int, index: int) -> Identity:
    """Identity ``index`` of the benchmark with ``seed`` (independent of how many identities exist)."""
    return sample_identity(np.random.default_rng([seed, index]))


def split_identities(count: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint train and test identity indices.

    ``round(count · test_fraction)`` identities (at least one when ``count ≥ 2`` and the fraction is
    positive, and never all of them) are held out, chosen by a generator seeded from ``seed``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(count * test_fraction)
    if test_fraction > 0 and count >= 2:
        n_test = min(max(n_test, 1), count - 1)
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(count)
    test = sorted(int(i) for i in order[:n_test])
    train = sorted(int(i) for i in order[n_test:])
    return train, test


@dataclass(frozen=True)
class SynthClip:
    """One synthetic clip: identity, articulation, speech and non-mouth motion (frames on demand)."""

    name: str
    identity: Identity
    articulation: ArticulationTrack
    audio: np.ndarray
    """``(N · 640,)`` float32 in [-1, 1] at 16 kHz."""
    motion: MotionTrack
    size: int

    @property
    def num_frames(self) -> int:
        """N."""
        return self.articulation.num_frames

    def states(self) -> Iterator[FaceState]:
        """The :class:`FaceState` of every frame."""
        for index in range(self.num_frames):
            yield self.motion.state(index, self.articulation.frames[index])

    def frames(self) -> Iterator[RenderedFrame]:
        """Render the frames one at a time (memory stays flat)."""
        renderer = FaceRenderer(self.identity, self.size)
        for state in self.states():
            yield renderer.render(state)


def make_clip(
    identity: Identity, num_frames: int, size: int, generator: np.random.Generator, name: str = "clip"
) -> SynthClip:
    """Draw the utterance, speech and motion of one clip.

    Args:
        identity: the speaker.
        num_frames: N frames at 25 fps (the audio has N · 640 samples).
        size: frame side in pixels.
        generator: source of randomness (utterance, voice noise, motion, in that order).
        name: clip name.
    """
    articulation = sample_articulation(generator, num_frames, identity.speaking_rate)
    audio = synthesize_speech(articulation, identity, generator)
    motion = sample_motion(identity, num_frames, generator, FPS)
    return SynthClip(name, identity, articulation, audio, motion, size)


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`run_synth` did."""

    out_dir: Path
    clips: tuple[str, ...]
    train_identities: tuple[str, ...]
    test_identities: tuple[str, ...]
    generated: int
    """Clips written by this call."""
    skipped: int
    """Clips already complete on disk."""
    elapsed: float
    """Seconds."""
    settings: dict[str, Any] = field(default_factory=dict)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _clip_complete(out_dir: Path, name: str) -> bool:
    truth = out_dir / "ground_truth" / name
    return (out_dir / "videos" / f"{name}.mp4").is_file() and all((truth / f).is_file() for f in GROUND_TRUTH_FILES)


def _write_clip(out_dir: Path, clip: SynthClip, identity_index: int, seed: int) -> None:
    """Ground truth into a temporary folder, then the mp4 (atomic), then rename the folder into place."""
    truth = out_dir / "ground_truth" / clip.name
    staging = out_dir / "ground_truth" / f".{clip.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    landmarks = np.empty((clip.num_frames, 68, 2), dtype=np.float32)
    metadata = {"title": clip.name, "comment": f"difftalk synthetic benchmark, seed {seed}"}
    try:
        with VideoWriter(
            out_dir / "videos" / f"{clip.name}.mp4", fps=FPS, audio=clip.audio, metadata=metadata
        ) as writer:
            for index, frame in enumerate(clip.frames()):
                writer.write(frame.image)
                landmarks[index] = frame.landmarks
            np.save(staging / "landmarks.npy", landmarks)
            np.save(staging / "articulation.npy", clip.articulation.frames.astype(np.float32))
            save_wav(staging / "audio.wav", clip.audio, SAMPLE_RATE)
            record = {
                "format": "difftalk-identity",
                "version": VERSION,
                "name": identity_name(identity_index),
                "index": identity_index,
                "seed": seed,
                "parameters": clip.identity.to_dict(),
            }
            (staging / "identity.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if truth.exists():
            shutil.rmtree(truth)
        os.replace(staging, truth)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into a folder made with different frame settings or seed."""
    if not path.is_file():
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    if previous.get("format") != FORMAT:
        raise ValueError(f"{path} is not a difftalk synthetic benchmark file; choose an empty output folder")
    old = previous.get("settings", {})
    for key in ("seconds", "size", "seed", "fps", "sample_rate"):
        if key in old and old[key] != settings[key]:
            raise ValueError(
                f"{path.parent} was made with {key}={old[key]!r}, not {settings[key]!r}; "
                "use a new output folder or the original settings"
            )


def run_synth(
    out_dir: str | Path,
    identities: int,
    seconds: float,
    size: int = 256,
    seed: int = 0,
    clips_per_identity: int = 1,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> SynthSummary:
    """Generate the synthetic benchmark (resumable; deterministic from ``seed``).

    Args:
        out_dir: output folder (created).
        identities: number of identities.
        seconds: length of each clip; rounded to whole frames at 25 fps.
        size: frame side in pixels.
        seed: master seed.
        clips_per_identity: clips (different utterances and motion) per identity.
        test_fraction: fraction of identities held out for testing.
        progress: show a tqdm progress bar over clips.

    Returns:
        A :class:`SynthSummary`.

    Raises:
        ValueError: invalid settings, or ``out_dir`` holds a benchmark made with other settings.
    """
    if identities < 1:
        raise ValueError(f"identities must be at least 1, got {identities}")
    if clips_per_identity < 1:
        raise ValueError(f"clips_per_identity must be at least 1, got {clips_per_identity}")
    num_frames = round(seconds * FPS)
    if num_frames < 1:
        raise ValueError(f"seconds must give at least one frame at {FPS} fps, got {seconds}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number of pixels ≥ 32, got {size}")
    out = Path(out_dir)
    started = time.perf_counter()
    settings = {
        "identities": identities,
        "seconds": float(seconds),
        "num_frames": num_frames,
        "size": size,
        "seed": seed,
        "clips_per_identity": clips_per_identity,
        "test_fraction": test_fraction,
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
    }
    _check_settings(out / "synth.json", settings)
    train, test = split_identities(identities, test_fraction, seed)
    split_of = {index: "train" for index in train} | {index: "test" for index in test}
    names = [clip_name(i, c) for i in range(identities) for c in range(clips_per_identity)]
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "settings": settings,
        "seed": seed,
        "channels": list(CHANNELS),
        "landmarks": "iBUG 68-point, frame pixel coordinates (x, y)",
        "split": {"train": [identity_name(i) for i in train], "test": [identity_name(i) for i in test]},
        "identities": [
            {
                "name": identity_name(i),
                "split": split_of[i],
                "clips": [clip_name(i, c) for c in range(clips_per_identity)],
            }
            for i in range(identities)
        ],
    }
    _atomic_write_text(out / "synth.json", json.dumps(manifest, indent=2))
    logger.info(
        "synthetic benchmark: %d identities × %d clips × %.2f s at %d px, seed %d → %s",
        identities,
        clips_per_identity,
        num_frames / FPS,
        size,
        seed,
        out,
    )
    generated = skipped = 0
    bar = tqdm(total=len(names), desc="synth", unit="clip", disable=not progress)
    for index in range(identities):
        identity = identity_for(seed, index)
        for clip_index in range(clips_per_identity):
            name = clip_name(index, clip_index)
            if _clip_complete(out, name):
                skipped += 1
            else:
                generator = np.random.default_rng([seed, index, 1, clip_index])
                clip = make_clip(identity, num_frames, size, generator, name)
                _write_clip(out, clip, index, seed)
                generated += 1
                logger.debug("wrote %s (%d frames)", name, num_frames)
            bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - started
    logger.info("synthetic benchmark done: %d clips written, %d already complete, %.1f s", generated, skipped, elapsed)
    return SynthSummary(
        out_dir=out,
        clips=tuple(names),
        train_identities=tuple(identity_name(i) for i in train),
        test_identities=tuple(identity_name(i) for i in test),
        generated=generated,
        skipped=skipped,
        elapsed=elapsed,
        settings=settings,
    )


def make_contact_sheet(out_path: str | Path, size: int = 160, identities: int = 6, seed: int = 0) -> Path:
    """Render a PNG grid: one row per identity, columns closed, half, wide, rounded, spread, blink.

    The identities are those of :func:`run_synth` with the same ``seed``.

    Args:
        out_path: output ``.png``.
        size: cell side in pixels.
        identities: number of rows.
        seed: benchmark seed.
    """
    if identities < 1:
        raise ValueError(f"identities must be at least 1, got {identities}")
    rows = []
    for index in range(identities):
        renderer = FaceRenderer(identity_for(seed, index), size)
        rows.append(
            [renderer.render(FaceState(articulation=art, eye_open=eyes)).image for _, art, eyes in _CONTACT_STATES]
        )
    path = save_image_grid(out_path, rows)
    logger.info("contact sheet of %d identities written to %s", identities, path)
    return path
