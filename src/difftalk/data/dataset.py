"""TalkingHeadDataset: one training sample per (clip, frame with a face).

Stage ③. A sample holds the target crop, the same crop with its mouth masked by the one mask
function of ``data.masks`` (no ground-truth mouth pixels survive), a reference frame of the same
clip drawn anew for every sample from frames at least ``reference_min_distance`` away, the
mouth-free landmarks and the audio feature windows of the 2w+1 frames around the target.

Random choices are drawn in ``__getitem__`` from ``np.random.default_rng((seed, epoch, index))``: no
global randomness, the same sample for the same (seed, epoch, index) in any worker or on resume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from difftalk.constants import SILENCE_HOLD_FRAMES
from difftalk.data.batch import TalkingHeadBatch
from difftalk.data.clips import Clip, frame_index, open_clips
from difftalk.data.masks import apply_mask, mouth_mask
from difftalk.data.transforms import to_tensor
from difftalk.preprocess.audio_features import silence_window
from difftalk.preprocess.landmarks import condition_landmarks

logger = logging.getLogger(__name__)


class TalkingHeadDataset(Dataset[TalkingHeadBatch]):
    """Samples for diffusion training and evaluation from a prepared dataset folder."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        split: str = "train",
        image_size: int,
        context_frames: int,
        feature_backend: str = "mel",
        reference_min_distance: int = 60,
        seed: int = 0,
        latent_cache: str | None = None,
        silence_db: float | None = None,
        silence_hold: int = SILENCE_HOLD_FRAMES,
    ) -> None:
        """Index the clips of ``split``.

        Args:
            data_dir: a prepared dataset (docs/formats.md).
            split: ``train``, ``test`` or ``all``.
            image_size: crop side the model expects; stored crops are resized if they differ.
            context_frames: 2w+1 audio frames per sample.
            feature_backend: which ``features/<backend>.npy`` to read.
            reference_min_distance: minimum |reference − target| in frames.
            seed: base seed of the per-sample random choices.
            latent_cache: fingerprint of a latent cache (``train.latent_cache``); samples then carry
                latents instead of frames.
            silence_db: frames whose audio is below this level get the feature window of digital silence,
                the rule inference applies (``GenerateOptions.silence_db``); None keeps the stored features.
            silence_hold: ... and only where the frames within ± this many are silent too
                (``GenerateOptions.silence_hold``).
        """
        self.clips: list[Clip] = open_clips(data_dir, split)
        self.image_size = image_size
        self.context_frames = context_frames
        self.feature_backend = feature_backend
        self.reference_min_distance = reference_min_distance
        self.seed = seed
        self.latent_cache = latent_cache
        self.epoch = 0
        self._clip_of, self._frame_of = frame_index(self.clips, f"{data_dir} ({split})")
        for clip in self.clips:
            clip.features(feature_backend)  # fail early with a clear message if a backend is missing
        self.silence_db = silence_db
        self._silent: list[np.ndarray] = []
        if silence_db is not None:
            self._silence = silence_window(feature_backend)
            self._silent = [clip.silent_frames(silence_db, silence_hold) for clip in self.clips]
        short = [c.name for c in self.clips if c.num_frames <= 2 * reference_min_distance]
        if short:
            logger.warning(
                "%d clip(s) are too short for references >= %d frames away (e.g. %s); the farthest frame is used",
                len(short),
                reference_min_distance,
                short[0],
            )

    def __len__(self) -> int:
        return int(self._frame_of.size)

    def set_epoch(self, epoch: int) -> None:
        """Make the random reference choices of the next pass differ from the last one."""
        self.epoch = epoch

    def locate(self, index: int) -> tuple[int, int]:
        """(clip index, frame index) of sample ``index``."""
        return int(self._clip_of[index]), int(self._frame_of[index])

    def choose_reference(self, clip: Clip, frame: int, rng: np.random.Generator) -> int:
        """A frame with a face at least ``reference_min_distance`` from ``frame`` (else the farthest one)."""
        valid = clip.valid_frames
        far = valid[np.abs(valid - frame) >= self.reference_min_distance]
        if far.size:
            return int(far[rng.integers(far.size)])
        return int(valid[np.argmax(np.abs(valid - frame))])

    def audio_window(self, clip_index: int, frame: int) -> np.ndarray:
        """``(2w+1, 16, F)`` float32 feature windows of frames ``frame-w … frame+w`` (edges repeated), silent
        frames replaced by digital silence's window when ``silence_db`` is set."""
        clip = self.clips[clip_index]
        half = self.context_frames // 2
        index = np.clip(np.arange(frame - half, frame - half + self.context_frames), 0, clip.num_frames - 1)
        windows = np.asarray(clip.features(self.feature_backend)[index], dtype=np.float32)
        if self._silent:
            windows[self._silent[clip_index][index]] = self._silence
        return windows

    def make_sample(self, clip_index: int, frame: int, reference: int) -> TalkingHeadBatch:
        """The sample for a given target and reference frame of one clip (no randomness)."""
        clip = self.clips[clip_index]
        size = self.image_size
        landmarks = clip.landmarks_at(frame, size)
        sample = TalkingHeadBatch(
            landmarks=torch.from_numpy(condition_landmarks(landmarks, size)),
            audio_features=torch.from_numpy(self.audio_window(clip_index, frame)),
            clip_index=torch.tensor(clip_index),
            frame_index=torch.tensor(frame),
            reference_index=torch.tensor(reference),
        )
        mask = torch.from_numpy(mouth_mask(landmarks, size))[None]
        sample.mouth_masks = mask
        if self.latent_cache is not None:
            latents = clip.latents(self.latent_cache)
            sample.target_latents = torch.from_numpy(latents[frame, 0].astype(np.float32))
            sample.masked_latents = torch.from_numpy(latents[frame, 1].astype(np.float32))
            sample.reference_latents = torch.from_numpy(latents[reference, 0].astype(np.float32))
            return sample
        target = to_tensor(clip.read_frame(frame, size))
        sample.target_frames = target
        sample.masked_frames = apply_mask(target, mask)
        sample.reference_frames = to_tensor(clip.read_frame(reference, size))
        return sample

    def __getitem__(self, index: int) -> TalkingHeadBatch:
        clip_index, frame = self.locate(index)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        reference = self.choose_reference(self.clips[clip_index], frame, rng)
        return self.make_sample(clip_index, frame, reference)
