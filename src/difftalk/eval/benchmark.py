"""``difftalk benchmark``: generate a results folder (docs/formats.md) for a dataset's held-out clips.

Stage ⑥ → ⑦. Each held-out clip's source video is dubbed with its own audio (self-driven: its frames
are the pixel ground truth) or with the next clip's audio (cross-driven), for the first ``seconds``
of the clip. Besides the model, two reference methods make the baselines of the paper's Table 3:

* ``lipgan``: the Wav2Lip-style GAN baseline (``difftalk train-lipgan``) through the same crops and paste-back;
* ``source``: the video unchanged (the original mouth, i.e. no lip-sync at all);
* ``static``: the mouth region of the reference frame pasted into every frame (a closed/static mouth).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from difftalk.constants import FPS, RESULTS_NAME
from difftalk.data.clips import Clip, open_clips
from difftalk.io.audio import SAMPLE_RATE, load_audio
from difftalk.io.video import VideoWriter, iter_frames
from difftalk.pipeline.base import TalkingHeadPipeline
from difftalk.pipeline.generate import DiffTalkPipeline
from difftalk.pipeline.options import GenerateOptions
from difftalk.pipeline.paste import paste_back, paste_weight
from difftalk.pipeline.source import analyze_source
from difftalk.preprocess.crop import crop_image, frame_to_crop

logger = logging.getLogger(__name__)

Method = Literal["difftalk", "lipgan", "source", "static"]


def _source_video(clip: Clip, data_dir: Path) -> Path:
    source = Path(clip.meta.get("source", ""))
    candidates = [source, data_dir / source, Path.cwd() / source]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the source video of clip {clip.name} ({source}) is not found; benchmark needs the original videos"
    )


def _static_mouth(source: Path, audio: np.ndarray, output: Path, frames: int, options: GenerateOptions) -> None:
    """Paste the first frame's mouth region into the first ``frames`` frames (a static-mouth baseline)."""
    track = analyze_source(source, FPS, landmarks=options.landmarks, progress=False)
    size = 128
    first = next(iter_frames(source, FPS))
    box0 = track.boxes[0]
    reference_crop = crop_image(first, box0, size)
    with VideoWriter(output, fps=FPS, audio=audio) as writer:
        for index, frame in enumerate(iter_frames(source, FPS)):
            if index >= frames:
                break
            if track.found[index]:
                points = frame_to_crop(track.landmarks[index], track.boxes[index], size)
                weight = paste_weight(points, size, options.feather)
                frame = paste_back(frame, reference_crop, track.boxes[index], weight)
            writer.write(frame)


def run_benchmark(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    method: Method = "difftalk",
    split: str = "test",
    seconds: float = 4.0,
    cross_audio: bool = False,
    options: GenerateOptions | None = None,
    device: str = "cpu",
    max_clips: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Generate ``out_dir/videos/<clip>.mp4`` for every clip of ``split`` and write ``results.json``.

    Args:
        data_dir: a prepared dataset whose clips' source videos are still on disk.
        out_dir: the results folder.
        checkpoint: model folder (``method="difftalk"`` only).
        method: ``difftalk``, or the baselines ``source`` / ``static``.
        split: which clips (``test`` = held-out identities).
        seconds: length of each generated segment (from the clip's start).
        cross_audio: drive each clip with the next selected clip's audio instead of its own (needs two).
        options: generation options (progress bars are turned off per clip).
        device: torch device for the model.
        max_clips: only the first clips (for quick runs).
        dtype: the model's precision (``difftalk`` only).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    options = replace(options or GenerateOptions(), progress=False, length="audio")
    clips = open_clips(data_dir, split)[:max_clips]
    if cross_audio and len(clips) < 2:
        raise ValueError(
            f"a cross-driven benchmark drives each clip with another clip's audio, but split {split!r} of "
            f"{data_dir} gives {len(clips)} clip(s); use a split with at least two clips or raise max_clips"
        )
    pipe: TalkingHeadPipeline | None = None
    if method in ("difftalk", "lipgan"):
        if checkpoint is None:
            raise ValueError(f"method '{method}' needs --checkpoint")
        if method == "difftalk":
            pipe = DiffTalkPipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
        else:
            from difftalk.pipeline.lipgan import LipGANPipeline

            pipe = LipGANPipeline.from_pretrained(checkpoint, device=device)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    entries = []
    for position, clip in enumerate(tqdm(clips, desc=f"benchmark ({method})", unit="clip")):
        audio_clip = clips[(position + 1) % len(clips)] if cross_audio else clip
        frames = min(round(seconds * FPS), clip.num_frames, audio_clip.num_frames)
        audio = load_audio(audio_clip.path / "audio.wav")[: round(frames / FPS * SAMPLE_RATE)]
        source = _source_video(clip, data_dir)
        output = out_dir / "videos" / f"{clip.name}.mp4"
        if pipe is not None:
            pipe.set_source(source, options)
            pipe.generate(audio, output, options)
        elif method == "source":
            with VideoWriter(output, fps=FPS, audio=audio) as writer:
                for index, frame in enumerate(iter_frames(source, FPS)):
                    if index >= frames:
                        break
                    writer.write(frame)
        elif method == "static":
            _static_mouth(source, audio, output, frames, options)
        else:
            raise ValueError(f"unknown method {method!r}; use difftalk, lipgan, source or static")
        entries.append(
            {
                "name": clip.name,
                "video": f"videos/{clip.name}.mp4",
                "audio_clip": audio_clip.name,
                "start_frame": 0,
                "num_frames": frames,
            }
        )
    results = {
        "format": "difftalk-results",
        "version": 1,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "data": str(data_dir),
        "method": method,
        "settings": {**asdict(options), "seconds": seconds, "cross_audio": cross_audio, "split": split},
        "clips": entries,
    }
    path = out_dir / RESULTS_NAME
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    logger.info("wrote %d clips to %s", len(entries), out_dir)
    return path
