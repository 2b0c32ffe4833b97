"""``difftalk preprocess``: a folder of videos → a prepared dataset (docs/formats.md).

Stage ②, the ordered stages for each video:

1. probe — any container/codec/fps/size/rotation PyAV reads;
2. landmarks — pass 1 over the frames resampled to 25 fps: 68 points per frame from the face tracker
   (or from the synthetic benchmark's ground truth); frames without a face are recorded, not fatal;
3. boxes — gaps filled, square crop boxes from mouth-free landmarks, smoothed over time (2 and 3 are
   :func:`~difftalk.preprocess.track.track_face`, the same function inference crops its reference with);
4. crops — pass 2 over the frames: one JPEG per frame and crop size (memory stays flat);
5. audio — 16 kHz mono, trimmed/padded to the video, and per-frame feature windows per backend;
6. clip folder moved into place; then the manifest with an identity-level train/test split.

Videos run in parallel worker processes; finished clips are skipped on a re-run (resumable).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from difftalk.constants import CLIP_META
from difftalk.io.audio import SAMPLE_RATE, AudioError, fit_length, load_audio
from difftalk.io.video import VideoError, iter_frames, probe_video
from difftalk.preprocess.audio_features import compute_features, load_precomputed
from difftalk.preprocess.crop import crop_image, frame_to_crop
from difftalk.preprocess.manifest import (
    DEFAULT_IDENTITY_PATTERN,
    ClipWriter,
    assign_splits,
    identity_of,
    is_complete,
    write_manifest,
)
from difftalk.preprocess.track import Detector, LandmarkSource, ground_truth_dir, track_face

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}


@dataclass(frozen=True)
class PreprocessOptions:
    """Settings of :func:`run_preprocess`."""

    crop_sizes: tuple[int, ...] = (256,)
    """Square crop sizes; the first is the primary one (landmarks are stored for it)."""
    fps: float = 25.0
    features: tuple[str, ...] = ("mel",)
    """Audio feature backends to compute (``mel``, ``whisper``, ``precomputed``)."""
    precomputed_dir: str = ""
    """Folder with ``<video stem>.npy`` AD-NeRF/DeepSpeech arrays for the ``precomputed`` backend."""
    landmarks: LandmarkSource = "auto"
    """``auto``: synthetic ground truth when present (``../ground_truth/<stem>/landmarks.npy``), else the detector."""
    detector: Detector = "hog"
    """dlib face detector: ``hog`` (fast) or ``cnn`` (MMOD, more pose-robust, much slower)."""
    test_fraction: float = 0.1
    split_seed: int = 0
    identity_pattern: str = DEFAULT_IDENTITY_PATTERN
    """Regex whose first group is the person's identity in a clip name (identity-level split)."""
    workers: int = 2
    max_seconds: float = 0.0
    """Only the first seconds of each video (0 = all)."""


@dataclass
class ClipReport:
    """What happened to one video."""

    name: str
    status: Literal["done", "skipped", "failed"]
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    message: str = ""


@dataclass
class PreprocessReport:
    """Summary of a :func:`run_preprocess` call."""

    data_dir: Path
    clips: list[ClipReport] = field(default_factory=list)

    @property
    def failed(self) -> list[ClipReport]:
        return [c for c in self.clips if c.status == "failed"]


def find_videos(videos_dir: Path) -> list[Path]:
    """Video files directly in ``videos_dir`` (sorted)."""
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"videos folder {videos_dir} does not exist")
    return sorted(p for p in videos_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def prepare_clip(video: Path, data_dir: Path, options: PreprocessOptions) -> ClipReport:
    """Run the stages of the module docstring for one video; failures are reported, not raised."""
    name = video.stem
    clip_dir = data_dir / "clips" / name
    if is_complete(clip_dir):
        return ClipReport(name, "skipped", message="already prepared")
    start = time.perf_counter()
    writer: ClipWriter | None = None
    try:
        info = probe_video(video)
        limit = int(options.max_seconds * options.fps) if options.max_seconds > 0 else None
        track = track_face(video, options.fps, landmarks=options.landmarks, detector=options.detector, max_frames=limit)
        landmarks, boxes, found = track.landmarks, track.boxes, track.found
        truth = ground_truth_dir(video) if track.landmark_source == "ground_truth" else None

        audio = load_audio(video)
        num_frames = track.num_frames
        writer = ClipWriter(clip_dir, options.crop_sizes)
        for index, frame in enumerate(iter_frames(video, options.fps)):
            if index >= num_frames:
                break
            writer.write_frame([crop_image(frame, boxes[index], size) for size in options.crop_sizes])
        num_frames = writer.frames_written
        if num_frames == 0:
            raise VideoError(f"{video}: no frames could be decoded in the second pass")
        size = options.crop_sizes[0]
        crop_landmarks = np.stack([frame_to_crop(landmarks[i], boxes[i], size) for i in range(num_frames)])
        writer.write_array("landmarks", crop_landmarks.astype(np.float32))
        writer.write_array("face_found", found[:num_frames])
        writer.write_array("boxes", boxes[:num_frames].astype(np.float32))
        audio = fit_length(audio, round(num_frames / options.fps * SAMPLE_RATE))
        writer.write_audio(audio)
        for backend in options.features:
            if backend == "precomputed":
                features = load_precomputed(str(Path(options.precomputed_dir) / f"{name}.npy"), num_frames)
            else:
                features = compute_features(audio, num_frames, backend=backend, fps=options.fps)  # type: ignore[arg-type]
            writer.write_array(f"features/{backend}", features)
        identity = identity_of(name, options.identity_pattern)
        if truth is not None:
            if (truth / "articulation.npy").is_file():
                writer.write_array("articulation", np.load(truth / "articulation.npy")[:num_frames])
            if (truth / "identity.json").is_file():
                writer.copy_file(truth / "identity.json", "identity.json")
        writer.finish(
            {
                "name": name,
                "identity": identity,
                "fps": options.fps,
                "num_frames": num_frames,
                "crop_size": size,
                "crop_sizes": list(options.crop_sizes),
                "source": str(video),
                "source_size": [info.height, info.width],
                "source_fps": info.fps,
                "audio_sample_rate": SAMPLE_RATE,
                "feature_backends": list(options.features),
                "faces_found": int(found[:num_frames].sum()),
                "landmark_source": track.landmark_source,
                "synthetic": truth is not None,
            }
        )
        return ClipReport(
            name, "done", num_frames, int(found[:num_frames].sum()), time.perf_counter() - start, f"{info.fps:g} fps"
        )
    except (VideoError, AudioError, FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        if writer is not None:
            writer.abort()
        return ClipReport(name, "failed", seconds=time.perf_counter() - start, message=str(exc))


def _synthetic_splits(videos_dir: Path) -> dict[str, str]:
    """The identity split recorded by ``difftalk synth`` (``synth.json`` beside the videos folder)."""
    path = videos_dir.parent / "synth.json"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        settings = json.load(handle)
    splits = settings.get("split", {})
    return {identity: split for split, identities in splits.items() for identity in identities}


def run_preprocess(
    videos_dir: str | Path, data_dir: str | Path, options: PreprocessOptions | None = None, progress: bool = True
) -> PreprocessReport:
    """Prepare every video of ``videos_dir`` into ``data_dir`` (resumable; see the module docstring)."""
    options = options or PreprocessOptions()
    videos_dir, data_dir = Path(videos_dir), Path(data_dir)
    videos = find_videos(videos_dir)
    if not videos:
        raise FileNotFoundError(f"{videos_dir} contains no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    (data_dir / "clips").mkdir(parents=True, exist_ok=True)
    report = PreprocessReport(data_dir)
    bar = tqdm(total=len(videos), desc="preprocess", unit="video", disable=not progress)
    if options.workers <= 1 or len(videos) == 1:
        for video in videos:
            report.clips.append(prepare_clip(video, data_dir, options))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=options.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(prepare_clip, video, data_dir, options) for video in videos]
            for future in as_completed(futures):
                report.clips.append(future.result())
                bar.update()
    bar.close()
    for clip in report.failed:
        logger.warning("%s: %s", clip.name, clip.message)
    metas: list[dict[str, Any]] = []
    for clip_dir in sorted((data_dir / "clips").iterdir()):
        if clip_dir.is_dir() and not clip_dir.name.startswith(".") and is_complete(clip_dir):
            with open(clip_dir / CLIP_META, encoding="utf-8") as handle:
                metas.append(json.load(handle))
    splits = assign_splits(
        (m["identity"] for m in metas), options.test_fraction, options.split_seed, _synthetic_splits(videos_dir)
    )
    write_manifest(
        data_dir,
        metas,
        splits,
        {"fps": options.fps, "crop_size": options.crop_sizes[0], "feature_backends": list(options.features)},
    )
    with open(data_dir / "preprocess_report.json", "w", encoding="utf-8") as handle:
        json.dump([asdict(c) for c in sorted(report.clips, key=lambda c: c.name)], handle, indent=2)
    return report
