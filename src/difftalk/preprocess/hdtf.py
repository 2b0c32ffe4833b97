"""HDTF: read the published lists, build the download commands, cut the annotated talking clips.

Stage ① → ②. The HDTF repository (github.com/MRzzm/HDTF, folder ``HDTF_dataset``) publishes, per
subset ``RD`` / ``WDA`` / ``WRA``: ``<subset>_video_url.txt`` (``name url`` per line) and
``<subset>_annotion_time.txt`` (``name.mp4 mm:ss-mm:ss mm:ss-mm:ss …``, the talking segments). The
videos themselves must be downloaded from YouTube (``yt-dlp``; not possible on machines without
internet). :func:`cut_clips` turns each downloaded video into ``<subset>_<name>_<k>.mp4`` clips
(25 fps, 16 kHz audio), ready for ``difftalk preprocess`` with ``HDTF_IDENTITY_PATTERN``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from difftalk.constants import FPS
from difftalk.io.audio import SAMPLE_RATE, load_audio
from difftalk.io.video import VideoWriter, iter_frames

logger = logging.getLogger(__name__)

SUBSETS = ("RD", "WDA", "WRA")


@dataclass(frozen=True)
class Segment:
    """One annotated talking segment of a downloaded HDTF video."""

    subset: str
    video: str
    index: int
    start: float
    end: float

    @property
    def clip_name(self) -> str:
        return f"{self.subset}_{self.video}_{self.index}"


def _seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.split(":")]
    value = 0.0
    for part in parts:
        value = value * 60 + part
    return value


def read_urls(annotations: str | Path) -> dict[str, str]:
    """``{subset_name: url}`` from the ``*_video_url.txt`` lists in ``annotations``."""
    urls = {}
    for subset in SUBSETS:
        path = Path(annotations) / f"{subset}_video_url.txt"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                urls[f"{subset}_{parts[0].removesuffix('.mp4')}"] = parts[1]
    if not urls:
        raise FileNotFoundError(f"no *_video_url.txt in {annotations}; pass the HDTF repository's HDTF_dataset folder")
    return urls


def read_segments(annotations: str | Path) -> list[Segment]:
    """Every annotated segment from the ``*_annotion_time.txt`` lists (the repository's spelling)."""
    segments = []
    for subset in SUBSETS:
        path = Path(annotations) / f"{subset}_annotion_time.txt"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            video = parts[0].removesuffix(".mp4")
            for index, span in enumerate(parts[1:]):
                match = re.fullmatch(r"([\d:]+)-([\d:]+)", span)
                if match is None:
                    logger.warning("%s: cannot read time span %r of %s", path.name, span, video)
                    continue
                segments.append(Segment(subset, video, index, _seconds(match[1]), _seconds(match[2])))
    if not segments:
        raise FileNotFoundError(f"no *_annotion_time.txt in {annotations}; pass the HDTF_dataset folder")
    return segments


def download_commands(annotations: str | Path, raw_dir: str | Path) -> list[list[str]]:
    """yt-dlp command lines (argument lists) that download every listed video as ``<subset>_<name>.mp4``."""
    commands = []
    for name, url in sorted(read_urls(annotations).items()):
        commands.append(
            [
                "yt-dlp",
                "-f",
                "bv*[height<=1080][ext=mp4]+ba[ext=m4a]/b[height<=1080]",
                "--merge-output-format",
                "mp4",
                "-o",
                str(Path(raw_dir) / f"{name}.mp4"),
                url,
            ]
        )
    return commands


def cut_clips(annotations: str | Path, raw_dir: str | Path, out_dir: str | Path, progress: bool = True) -> list[Path]:
    """Cut each downloaded ``raw_dir/<subset>_<name>.mp4`` into its annotated segments (25 fps, 16 kHz).

    Videos that are missing (not downloadable any more) are logged and skipped; clips already cut
    are kept (resumable). Returns the clip paths written or found.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list[Segment]] = {}
    for segment in read_segments(annotations):
        by_video.setdefault(f"{segment.subset}_{segment.video}", []).append(segment)
    written = []
    for name, segments in tqdm(sorted(by_video.items()), desc="HDTF clips", unit="video", disable=not progress):
        source = raw_dir / f"{name}.mp4"
        targets = [out_dir / f"{s.clip_name}.mp4" for s in segments]
        if all(t.is_file() for t in targets):
            written += targets
            continue
        if not source.is_file():
            logger.warning("%s is not downloaded; skipping its %d clips", source, len(segments))
            continue
        audio = load_audio(source)
        pending = sorted(zip(segments, targets, strict=True), key=lambda pair: pair[0].start)
        writer: VideoWriter | None = None
        current = 0
        for index, frame in enumerate(iter_frames(source, FPS)):
            time = index / FPS
            while current < len(pending) and time >= pending[current][0].end:
                if writer is not None:
                    written.append(writer.close())
                    writer = None
                current += 1
            if current >= len(pending):
                break
            segment, target = pending[current]
            if time < segment.start or target.is_file():
                continue
            if writer is None:
                first = round(segment.start * SAMPLE_RATE)
                clip_audio = audio[first : round(segment.end * SAMPLE_RATE)]
                writer = VideoWriter(target, fps=FPS, audio=clip_audio)
            writer.write(frame)
        if writer is not None:
            written.append(writer.close())
    return written
