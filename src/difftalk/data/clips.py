"""Read prepared clip folders (the format in docs/formats.md) without loading them into memory.

Stage ③. Arrays are memory-mapped and frames are decoded on demand, so a dataset of any size costs
almost no resident memory per worker (the official code kept Python lists of every sample and grew
until it ran out of host memory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from difftalk.constants import CLIP_META, FPS, MANIFEST
from difftalk.io.audio import load_audio
from difftalk.preprocess.audio_features import silent_frames


class DatasetError(ValueError):
    """A prepared dataset folder is missing or inconsistent."""


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """Read ``DATA_DIR/manifest.json``.

    Raises:
        FileNotFoundError / DatasetError with the fix (run ``difftalk preprocess``) in the message.
    """
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"dataset folder {data_dir} does not exist; create it with `difftalk preprocess VIDEOS_DIR {data_dir}`"
        )
    if not path.is_file():
        raise DatasetError(
            f"{data_dir} has no {MANIFEST}: it is not a prepared dataset; "
            f"run `difftalk preprocess VIDEOS_DIR {data_dir}`"
        )
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("format") != "difftalk-dataset":
        raise DatasetError(f"{path} is not a difftalk dataset manifest")
    return manifest


@dataclass
class Clip:
    """One prepared clip folder; arrays load lazily (memory-mapped)."""

    path: Path
    name: str
    identity: str
    split: str
    num_frames: int
    crop_size: int

    @classmethod
    def open(cls, path: str | Path, split: str = "") -> Clip:
        """Open ``path`` (a folder with ``meta.json``)."""
        path = Path(path)
        meta_path = path / CLIP_META
        if not meta_path.is_file():
            raise DatasetError(f"{path} is not a prepared clip (no {CLIP_META}); re-run `difftalk preprocess`")
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        return cls(
            path=path,
            name=meta["name"],
            identity=meta.get("identity", meta["name"]),
            split=split,
            num_frames=int(meta["num_frames"]),
            crop_size=int(meta["crop_size"]),
        )

    @cached_property
    def meta(self) -> dict[str, Any]:
        with open(self.path / CLIP_META, encoding="utf-8") as handle:
            return dict(json.load(handle))

    @cached_property
    def landmarks(self) -> np.ndarray:
        """``(N, 68, 2)`` float32 crop pixel coordinates."""
        return np.load(self.path / "landmarks.npy", mmap_mode="r")

    @cached_property
    def face_found(self) -> np.ndarray:
        """``(N,)`` bool."""
        return np.load(self.path / "face_found.npy")

    @cached_property
    def valid_frames(self) -> np.ndarray:
        """Indices of frames with a face, int64 ascending."""
        return np.flatnonzero(self.face_found)

    @cached_property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` crop boxes in source-video pixels."""
        return np.load(self.path / "boxes.npy", mmap_mode="r")

    def features(self, backend: str) -> np.ndarray:
        """``(N, 16, F)`` float16 per-frame audio windows of ``backend`` (memory-mapped)."""
        path = self.path / "features" / f"{backend}.npy"
        if not path.is_file():
            available = sorted(p.stem for p in (self.path / "features").glob("*.npy"))
            raise DatasetError(
                f"{self.path} has no '{backend}' audio features (has: {', '.join(available) or 'none'}); "
                f"re-run `difftalk preprocess ... --features {backend}`"
            )
        return np.load(path, mmap_mode="r")

    def silent_frames(self, threshold_db: float, hold: int = 0) -> np.ndarray:
        """``(N,)`` bool: frames whose audio is below ``threshold_db`` (``preprocess.audio_features.silent_frames``)."""
        fps = float(self.meta.get("fps", FPS))
        return silent_frames(load_audio(self.path / "audio.wav"), self.num_frames, threshold_db, fps, hold)

    def frame_path(self, index: int, size: int | None = None) -> Path:
        folder = "frames" if size is None or size == self.crop_size else f"frames_{size}"
        return self.path / folder / f"{index:06d}.jpg"

    def read_frame(self, index: int, size: int | None = None) -> np.ndarray:
        """Frame ``index`` as uint8 ``(S, S, 3)`` RGB (resized if the stored crop size differs from ``size``)."""
        path = self.frame_path(index, size)
        if not path.is_file() and size is not None:
            path = self.frame_path(index)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read frame {path}; the clip folder is damaged, re-run preprocessing")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if size is not None and image.shape[0] != size:
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        return image

    def landmarks_at(self, index: int, size: int | None = None) -> np.ndarray:
        """``(68, 2)`` float32 landmarks of frame ``index`` in crop pixels at ``size``."""
        points = np.asarray(self.landmarks[index], dtype=np.float32)
        if size is not None and size != self.crop_size:
            points = points * (size / self.crop_size)
        return points

    def latents_path(self, fingerprint: str) -> Path:
        """Where the latent cache of the autoencoder ``fingerprint`` lives (see ``train.latent_cache``)."""
        return self.path / "latents" / f"{fingerprint}.npy"

    def latents(self, fingerprint: str) -> np.ndarray:
        """Memory-mapped ``(N, 2, C, h, w)`` float16: E(frame) and E(masked frame) per frame."""
        path = self.latents_path(fingerprint)
        if not path.is_file():
            raise DatasetError(f"{self.path} has no latent cache {fingerprint}; it is built by `difftalk train`")
        return np.load(path, mmap_mode="r")

    @cached_property
    def articulation(self) -> np.ndarray | None:
        """Synthetic ground truth ``(N, 5)`` or None for real clips."""
        path = self.path / "articulation.npy"
        return np.load(path) if path.is_file() else None


def open_clips(data_dir: str | Path, split: str = "all") -> list[Clip]:
    """The clips of ``split`` (``train``, ``test`` or ``all``) listed in the manifest."""
    manifest = load_manifest(data_dir)
    clips = []
    for entry in manifest["clips"]:
        if split != "all" and entry.get("split") != split:
            continue
        clips.append(Clip.open(Path(data_dir) / "clips" / entry["name"], split=entry.get("split", "")))
    if not clips:
        raise DatasetError(f"{data_dir} has no clips in split '{split}'")
    return clips


def frame_index(clips: list[Clip], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(clip index, frame index) of every frame with a face, as two flat int32 arrays.

    Flat arrays, not Python lists of tuples: under forked DataLoader workers, list elements'
    reference counts dirty every page (copy-on-write), which is how host memory used to grow.

    Raises:
        DatasetError: no clip has a frame with a face (``where`` names the data in the message).
    """
    counts = [len(c.valid_frames) for c in clips]
    clip_of = np.repeat(np.arange(len(clips), dtype=np.int32), counts)
    frame_of = np.concatenate([c.valid_frames for c in clips]).astype(np.int32) if clips else np.zeros(0, np.int32)
    if frame_of.size == 0:
        raise DatasetError(f"{where} has no frames with a face")
    return clip_of, frame_of
