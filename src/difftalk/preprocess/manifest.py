"""Write prepared clip folders and the dataset manifest (docs/formats.md), atomically.

Stage ②. A clip is assembled in a hidden ``.<name>.partial`` folder and renamed into place only when
every file is written, so an interrupted run leaves no half clip that looks done; a re-run removes
the partial folder and redoes that clip (skip-if-done for the complete ones).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from difftalk.constants import CLIP_META, MANIFEST
from difftalk.io.audio import SAMPLE_RATE, save_wav

JPEG_QUALITY = 95


DEFAULT_IDENTITY_PATTERN = r"^(.+?)(?:_c?\d+)*$"
"""Drops trailing ``_<digits>`` / ``_c<digits>`` parts: ``WDA_BarackObama_000`` → ``WDA_BarackObama``,
``id0003_c01`` → ``id0003``. For HDTF use :data:`HDTF_IDENTITY_PATTERN`."""

HDTF_IDENTITY_PATTERN = r"^(?:WDA_|WRA_)([A-Za-z-]+?)\d*(?:_\d+)*$|^(RD_Radio\d+)(?:_\d+)*$"
"""``WDA_AmyKlobuchar0_0`` and ``WDA_AmyKlobuchar1_2`` are one person; each radio show is its own."""


def identity_of(name: str, pattern: str = DEFAULT_IDENTITY_PATTERN) -> str:
    """Identity of a clip: the first non-empty group of ``pattern`` matched against its name (else the name)."""
    match = re.match(pattern, name)
    groups = [g for g in (match.groups() if match else ()) if g]
    return groups[0] if groups else name


def is_complete(clip_dir: Path) -> bool:
    """True if ``clip_dir`` holds a finished clip (its meta.json is written last)."""
    return (clip_dir / CLIP_META).is_file()


class ClipWriter:
    """Assemble one clip folder; call :meth:`finish` to move it into place."""

    def __init__(self, clip_dir: Path, crop_sizes: Iterable[int]) -> None:
        self.clip_dir = clip_dir
        self.tmp_dir = clip_dir.with_name(f".{clip_dir.name}.partial")
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.crop_sizes = list(crop_sizes)
        for i, size in enumerate(self.crop_sizes):
            (self.tmp_dir / self._frames_folder(i, size)).mkdir(parents=True, exist_ok=True)
        (self.tmp_dir / "features").mkdir(parents=True, exist_ok=True)
        self.frames_written = 0

    @staticmethod
    def _frames_folder(position: int, size: int) -> str:
        return "frames" if position == 0 else f"frames_{size}"

    def write_frame(self, crops: list[np.ndarray]) -> None:
        """Write the next frame's crops (uint8 RGB, one per crop size, in the writer's order)."""
        name = f"{self.frames_written:06d}.jpg"
        for i, (size, crop) in enumerate(zip(self.crop_sizes, crops, strict=True)):
            if crop.shape != (size, size, 3):
                raise ValueError(f"crop {i} has shape {crop.shape}, expected {(size, size, 3)}")
            path = self.tmp_dir / self._frames_folder(i, size) / name
            cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        self.frames_written += 1

    def write_array(self, name: str, array: np.ndarray) -> None:
        """Save ``array`` as ``<name>.npy`` (``name`` may contain a sub-folder, e.g. ``features/mel``)."""
        np.save(self.tmp_dir / f"{name}.npy", array)

    def write_audio(self, audio: np.ndarray) -> None:
        save_wav(self.tmp_dir / "audio.wav", audio, SAMPLE_RATE)

    def copy_file(self, source: Path, name: str) -> None:
        shutil.copyfile(source, self.tmp_dir / name)

    def finish(self, meta: Mapping[str, Any]) -> Path:
        """Write meta.json and move the folder into place."""
        meta = {"format": "difftalk-clip", "version": 1, **meta}
        with open(self.tmp_dir / CLIP_META, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
        if self.clip_dir.exists():
            shutil.rmtree(self.clip_dir)
        os.replace(self.tmp_dir, self.clip_dir)
        return self.clip_dir

    def abort(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def assign_splits(
    identities: Iterable[str], test_fraction: float, seed: int, fixed: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Identity → ``train``/``test``, deterministic. ``fixed`` (e.g. the synthetic benchmark's own split)
    wins; the rest is split by a keyed hash so adding videos never moves existing identities."""
    result: dict[str, str] = {}
    for identity in sorted(set(identities)):
        if fixed and identity in fixed:
            result[identity] = fixed[identity]
            continue
        digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
        result[identity] = "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"
    return result


def write_manifest(
    data_dir: Path, clip_metas: list[dict[str, Any]], splits: Mapping[str, str], extra: Mapping[str, Any]
) -> Path:
    """Write ``manifest.json`` listing every complete clip with its identity-level split."""
    clips = [
        {
            "name": meta["name"],
            "identity": meta["identity"],
            "split": splits.get(meta["identity"], "train"),
            "num_frames": meta["num_frames"],
        }
        for meta in sorted(clip_metas, key=lambda m: m["name"])
    ]
    manifest = {"format": "difftalk-dataset", "version": 1, **extra, "clips": clips}
    path = data_dir / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
    os.replace(tmp, path)
    return path
