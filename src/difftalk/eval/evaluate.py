"""``difftalk evaluate``: every metric over a results folder, written as ``metrics.json`` and ``metrics.md``.

Stage ⑦. Reads ``RESULTS/results.json`` (docs/formats.md, "Generated results"). For each entry the
generated full-frame video is streamed in windows of ``window`` frames (memory is flat in video
length); output frame i is cut with the crop box of dataset clip frame ``start_frame + i`` (the
clip's ``boxes.npy``) at the dataset's crop size, so generated and ground-truth crops are aligned
pixel for pixel.

* **self-driven** (``audio_clip == name``): image quality against the clip's frames (PSNR / SSIM /
  LPIPS, whole crop and mouth region), LMD, lip sync (LSE-D / LSE-C / AV offset), articulation error
  and temporal jitter; the ground-truth frames are scored too (``*_gt``: the reference row).
* **cross-driven**: only sync (against ``audio_clip``'s audio) and articulation (against its
  articulation), plus the jitter of the generated frames; and the **audio-dependence control**: the
  same scores against the SOURCE clip (the dubbed video's own audio and articulation: ``lse_c_source``,
  ``lse_d_source``, ``jaw_corr_source``, ``articulation_mae_source``). A model whose mouth follows the
  driving audio scores high against the driving clip and low against the source; a mouth that follows
  the source video (a leak through the masked frame or the jaw-side landmarks) does the opposite. The
  sync half works on any data with a sync expert, the articulation half on the synthetic benchmark.

The driving audio segment is ``audio_clip``'s ``audio.wav`` from frame ``audio_start_frame`` (an
optional entry key; default ``start_frame``) for ``num_frames`` frames. Metrics that need something
missing — LPIPS weights, a SyncNet expert, dlib, articulation ground truth — are listed under
``unavailable`` with the reason, never faked.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from difftalk.constants import FPS, RESULTS_NAME
from difftalk.data.clips import Clip, DatasetError, load_manifest, open_clips
from difftalk.data.masks import mouth_box
from difftalk.io.audio import SAMPLE_RATE, load_audio
from difftalk.io.video import VideoError, iter_frames, probe_video
from difftalk.metrics.articulation import (
    ArticulationProbe,
    ProbeConfig,
    articulation_error,
    load_or_train_probe,
    mouth_patch,
    predict_articulation,
)
from difftalk.metrics.image import ImageQuality
from difftalk.metrics.landmarks import LandmarkDistance, MouthLandmarker, load_landmarker
from difftalk.metrics.lpips import LPIPS, load_lpips
from difftalk.metrics.sync import VSHIFT, SyncAccumulator, SyncScore
from difftalk.metrics.temporal import JitterAccumulator, save_heat_maps
from difftalk.models.syncnet import SyncNet, load_syncnet
from difftalk.preprocess.crop import crop_image

logger = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"

COLUMNS = (
    ("psnr", "PSNR ↑"),
    ("ssim", "SSIM ↑"),
    ("lpips", "LPIPS ↓"),
    ("psnr_mouth", "PSNR mouth ↑"),
    ("ssim_mouth", "SSIM mouth ↑"),
    ("lpips_mouth", "LPIPS mouth ↓"),
    ("lmd", "LMD ↓"),
    ("lse_d", "LSE-D ↓"),
    ("lse_c", "LSE-C ↑"),
    ("av_offset", "offset"),
    ("lse_d_at_0", "LSE-D@0 ↓"),
    ("lse_c_gt", "LSE-C GT"),
    ("articulation_mae", "artic. MAE ↓"),
    ("articulation_mae_gt", "artic. MAE GT"),
    ("jaw_corr", "jaw r ↑"),
    ("lse_c_source", "LSE-C vs source ↓"),
    ("jaw_corr_source", "jaw r vs source ↓"),
    ("jitter", "jitter"),
    ("jitter_gt", "jitter GT"),
    ("jitter_ratio", "jitter ratio"),
)
"""Metrics shown in the Markdown tables (all metrics are in metrics.json)."""


@dataclass
class Models:
    """What :func:`evaluate_results` scores with; None = that metric is unavailable."""

    syncnet: SyncNet | None = None
    lpips: LPIPS | None = None
    landmarker: MouthLandmarker | None = None
    probe: ArticulationProbe | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass
class ClipResult:
    """The metrics of one results entry."""

    name: str
    audio_clip: str
    mode: str
    """``self`` or ``cross``."""
    start_frame: int
    num_frames: int
    metrics: dict[str, float | None]
    heat_map: str | None = None


def _read_results(results_dir: Path) -> dict[str, Any]:
    path = results_dir / RESULTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{results_dir} has no {RESULTS_NAME}; it is written by `difftalk benchmark`")
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    if results.get("format") != "difftalk-results" or not isinstance(results.get("clips"), list):
        raise ValueError(f"{path} is not a difftalk results file (format 'difftalk-results' with a clips list)")
    return dict(results)


def _windows(frames: Iterator[np.ndarray], size: int, limit: int) -> Iterator[list[np.ndarray]]:
    frames = islice(frames, limit)
    while chunk := list(islice(frames, size)):
        yield chunk


def _sync_metrics(score: SyncScore | None, suffix: str = "") -> dict[str, float | None]:
    if score is None:
        return {}
    if suffix:
        return {f"lse_d{suffix}": score.lse_d, f"lse_c{suffix}": score.lse_c}
    return {
        "lse_d": score.lse_d,
        "lse_c": score.lse_c,
        "av_offset": float(score.offset),
        "lse_d_at_0": score.lse_d_at_0,
        "lse_c_at_0": score.lse_c_at_0,
    }


def _articulation(probe: ArticulationProbe, crops: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
    patches = [mouth_patch(crop, points, probe.config) for crop, points in zip(crops, landmarks, strict=True)]
    return predict_articulation(probe, patches)


def _source_control(
    clip: Clip,
    start: int,
    count: int,
    samples_per_frame: float,
    sync: SyncAccumulator | None,
    predicted: list[np.ndarray],
    vshift: int,
) -> dict[str, float | None]:
    """Sync and articulation of a cross-driven video against its SOURCE clip (``*_source``): must be low."""
    metrics: dict[str, float | None] = {}
    if sync is not None:
        own = load_audio(clip.path / "audio.wav")
        own = own[round(start * samples_per_frame) : round((start + count) * samples_per_frame)]
        metrics.update(_sync_metrics(sync.finish(own, vshift), "_source"))
    truth = clip.articulation
    if truth is not None and predicted:
        error = articulation_error(np.concatenate(predicted), truth[start : start + count])
        metrics.update({"articulation_mae_source": error.mae, "jaw_corr_source": error.jaw_corr})
    return metrics


def evaluate_clip(
    entry: dict[str, Any],
    results_dir: Path,
    clips: dict[str, Clip],
    fps: float,
    models: Models,
    window: int = 32,
    vshift: int = VSHIFT,
    heat_maps: bool = True,
    device: torch.device | str = "cpu",
) -> ClipResult:
    """All metrics of one ``results.json`` entry (streams the video once).

    Raises:
        ValueError: the entry names an unknown clip, a segment outside the clip or a video of another size.
    """
    for key in ("name", "video", "audio_clip", "start_frame", "num_frames"):
        if key not in entry:
            raise ValueError(f"results entry {entry} has no '{key}'")
    name, audio_name = str(entry["name"]), str(entry["audio_clip"])
    for clip_name in (name, audio_name):
        if clip_name not in clips:
            raise ValueError(f"results entry {name}: clip '{clip_name}' is not in the dataset")
    clip, audio_clip = clips[name], clips[audio_name]
    start, count = int(entry["start_frame"]), int(entry["num_frames"])
    audio_start = int(entry.get("audio_start_frame", start))
    if start < 0 or count < 1 or start + count > clip.num_frames:
        raise ValueError(f"{name}: frames {start}…{start + count - 1} are outside the clip's {clip.num_frames}")
    if audio_start < 0 or audio_start + count > audio_clip.num_frames:
        raise ValueError(f"{name}: audio frames {audio_start}…{audio_start + count - 1} are outside {audio_name}")
    self_driven = name == audio_name
    video = results_dir / str(entry["video"])
    info = probe_video(video)
    expected = clip.meta.get("source_size")
    if expected and (info.height, info.width) != tuple(expected):
        raise ValueError(
            f"{video} is {info.width}x{info.height}, but clip {name} was cut from a {expected[1]}x{expected[0]} "
            "video; generated videos must keep the source geometry (docs/formats.md)"
        )
    size = clip.crop_size
    samples = SAMPLE_RATE / fps
    audio = load_audio(audio_clip.path / "audio.wav")[
        round(audio_start * samples) : round((audio_start + count) * samples)
    ]

    quality = ImageQuality(models.lpips) if self_driven else None
    lmd = LandmarkDistance(models.landmarker) if self_driven and models.landmarker is not None else None
    jitter = JitterAccumulator()
    jitter_gt = JitterAccumulator() if self_driven else None
    sync = SyncAccumulator(models.syncnet, device=device) if models.syncnet is not None else None
    sync_gt = SyncAccumulator(models.syncnet, device=device) if models.syncnet is not None and self_driven else None
    predicted: list[np.ndarray] = []  # (n, 5) per window: articulation read off the generated mouths
    predicted_gt: list[np.ndarray] = []
    done = 0
    for chunk in _windows(iter_frames(video, fps), window, count):
        indices = range(start + done, start + done + len(chunk))
        crops = [crop_image(frame, clip.boxes[i], size) for frame, i in zip(chunk, indices, strict=True)]
        landmarks = [clip.landmarks_at(i) for i in indices]
        boxes = [mouth_box(points, size) for points in landmarks]
        jitter.add(crops, boxes)
        if sync is not None:
            sync.add(np.stack(crops))
        if models.probe is not None:
            predicted.append(_articulation(models.probe, crops, landmarks))
        if self_driven:
            truth = [clip.read_frame(i) for i in indices]
            assert quality is not None and jitter_gt is not None
            quality.add(crops, truth, boxes)
            jitter_gt.add(truth, boxes)
            if lmd is not None:
                lmd.add(crops, truth, landmarks)
            if sync_gt is not None:
                sync_gt.add(np.stack(truth))
            if models.probe is not None:
                predicted_gt.append(_articulation(models.probe, truth, landmarks))
        done += len(chunk)
    if done < count:
        logger.warning("%s: the video has %d frames, results.json says %d; scoring %d", video, done, count, done)
    audio = audio[: round(done * samples)]

    metrics: dict[str, float | None] = {}
    if quality is not None:
        metrics.update(quality.means())
    if lmd is not None:
        metrics.update(lmd.means())
    if sync is not None:
        metrics.update(_sync_metrics(sync.finish(audio, vshift)))
    if sync_gt is not None:
        metrics.update(_sync_metrics(sync_gt.finish(audio, vshift), "_gt"))
    truth_articulation = audio_clip.articulation
    if truth_articulation is not None and predicted:
        target = truth_articulation[audio_start : audio_start + done]
        metrics.update(articulation_error(np.concatenate(predicted), target).as_dict())
        if predicted_gt:
            floor = articulation_error(np.concatenate(predicted_gt), target)
            metrics.update({"articulation_mae_gt": floor.mae, "jaw_corr_gt": floor.jaw_corr})
    if not self_driven:  # the audio-dependence control: the same scores against the source clip
        metrics.update(_source_control(clip, start, done, samples, sync, predicted, vshift))
    metrics["jitter"] = jitter.jitter
    heat_map = None
    if jitter_gt is not None:
        metrics["jitter_gt"] = jitter_gt.jitter
        if jitter.jitter is not None and jitter_gt.jitter:
            metrics["jitter_ratio"] = jitter.jitter / jitter_gt.jitter
    if heat_maps and jitter.heat_map is not None:
        maps, labels = [jitter.heat_map], ["generated"]
        if jitter_gt is not None and jitter_gt.heat_map is not None:
            maps, labels = [*maps, jitter_gt.heat_map], [*labels, "ground truth"]
        stem = name if self_driven else f"{name}__audio_{audio_name}"
        heat_map = str(save_heat_maps(results_dir / "heatmaps" / f"{stem}.png", maps, labels).relative_to(results_dir))
    return ClipResult(name, audio_name, "self" if self_driven else "cross", start, done, metrics, heat_map)


def load_models(
    data_dir: Path,
    syncnet: str | Path | None,
    lpips_weights: str | Path | None,
    landmarks: bool,
    articulation: bool,
    probe_cache_dir: str | Path | None,
    device: torch.device | str,
    probe_config: ProbeConfig | None = None,
) -> Models:
    """Load (or, for the articulation probe, train and cache) every scorer; record what is unavailable."""
    models = Models()
    if syncnet is not None:
        models.syncnet = load_syncnet(syncnet, device=device)
    else:
        models.unavailable["lse"] = (
            "no SyncNet expert given (--syncnet: a `difftalk train-syncnet` folder or syncnet_v2.model)"
        )
    models.lpips = load_lpips(lpips_weights, device=device)
    if models.lpips is None:
        models.unavailable["lpips"] = (
            "LPIPS weights (torchvision AlexNet + lpips v0.1 alex.pth) are not on this machine"
        )
    if landmarks:
        models.landmarker = load_landmarker()
        if models.landmarker is None:
            models.unavailable["lmd"] = "dlib is not installed (pip install 'difftalk[face]')"
    else:
        models.unavailable["lmd"] = "disabled"
    if articulation:
        models.probe = load_or_train_probe(data_dir, probe_cache_dir, probe_config)
        if models.probe is not None:
            models.probe.to(device)
        else:
            models.unavailable["articulation"] = "the dataset has no articulation ground truth (synthetic data only)"
    else:
        models.unavailable["articulation"] = "disabled"
    return models


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summarise(results: list[ClipResult]) -> dict[str, dict[str, float | int | None]]:
    """Per mode (``self_driven``, ``cross_driven``): the mean of every metric over the clips that have it."""
    summary: dict[str, dict[str, float | int | None]] = {}
    for mode, label in (("self", "self_driven"), ("cross", "cross_driven")):
        group = [r for r in results if r.mode == mode]
        if not group:
            continue
        keys = list(dict.fromkeys(k for r in group for k in r.metrics))
        row: dict[str, float | int | None] = {"num_clips": len(group), "num_frames": sum(r.num_frames for r in group)}
        for key in keys:
            values = [v for r in group if (v := r.metrics.get(key)) is not None]
            row[key] = _mean(values) if values else None
        summary[label] = row
    return summary


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def write_markdown(path: Path, report: dict[str, Any], results: list[ClipResult]) -> None:
    """``metrics.md``: the summary table, the per-clip table and what is unavailable."""
    present = {k for r in results for k, v in r.metrics.items() if v is not None}
    columns = [(key, title) for key, title in COLUMNS if key in present]
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "---|" * len(columns)
    lines = [f"# Evaluation of `{report['results_dir']}`", ""]
    lines += [f"Method `{report.get('method')}`, checkpoint `{report.get('checkpoint')}`, data `{report['data']}`.", ""]
    lines += ["## Summary (mean over clips)", "", "| group | clips | frames " + header, "|---|---|---" + rule]
    for group, row in report["summary"].items():
        cells = [_cell(row.get(key)) for key, _ in columns]
        lines.append(f"| {group} | {row['num_clips']} | {row['num_frames']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per clip", "", "| clip | audio | frames " + header, "|---|---|---" + rule]
    for result in results:
        cells = [_cell(result.metrics.get(key)) for key, _ in columns]
        lines.append(f"| {result.name} | {result.audio_clip} | {result.num_frames} | " + " | ".join(cells) + " |")
    if report["unavailable"]:
        lines += ["", "## Unavailable", ""]
        lines += [f"- **{key}**: {reason}" for key, reason in report["unavailable"].items()]
    lines += [
        "",
        "PSNR/SSIM/LPIPS/LMD against the clip's own frames (self-driven only); LSE-D/LSE-C with the best offset "
        "in ±15 frames (offset in syncnet_python's sign), LSE-D@0 at offset 0; articulation MAE of the probe "
        "against the driving clip's articulation; jitter = mean |Δ| between adjacent frames in the mouth box "
        "(0–255); `GT` columns score the ground-truth frames the same way.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def evaluate_results(
    results_dir: str | Path,
    data_dir: str | Path | None = None,
    syncnet: str | Path | None = None,
    *,
    lpips_weights: str | Path | None = None,
    landmarks: bool = True,
    articulation: bool = True,
    probe_cache_dir: str | Path | None = None,
    probe_config: ProbeConfig | None = None,
    heat_maps: bool = True,
    window: int = 32,
    vshift: int = VSHIFT,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Score every entry of ``RESULTS/results.json``; write ``metrics.json`` and ``metrics.md`` there.

    Args:
        results_dir: the results folder (docs/formats.md "Generated results").
        data_dir: the prepared dataset; default ``results.json``'s ``data``.
        syncnet: a SyncNet checkpoint folder (``difftalk train-syncnet``) or a ``syncnet_v2.model`` file;
            None leaves LSE unavailable.
        lpips_weights: folder with the LPIPS weight files (else the standard search path; see metrics.lpips).
        landmarks: compute LMD (needs dlib).
        articulation: compute the articulation error (synthetic data; trains and caches the probe once).
        probe_cache_dir: where the probe is cached (default ``DATA_DIR/cache``).
        probe_config: architecture and training of the probe (default :class:`ProbeConfig`).
        heat_maps: write ``RESULTS/heatmaps/<clip>.png``.
        window: frames decoded and scored at a time (memory bound).
        vshift: SyncNet offset search range in frames.
        device: torch device of the networks.
        progress: tqdm bar over clips.

    Returns:
        The report written to ``metrics.json`` (before JSON encoding: ``inf`` stays a float).
    """
    results_dir = Path(results_dir)
    results = _read_results(results_dir)
    data_path = Path(data_dir if data_dir is not None else results.get("data", ""))
    manifest = load_manifest(data_path)
    fps = float(manifest.get("fps", FPS))
    clips = {clip.name: clip for clip in open_clips(data_path, "all")}
    models = load_models(
        data_path, syncnet, lpips_weights, landmarks, articulation, probe_cache_dir, device, probe_config
    )
    if models.syncnet is not None and abs(fps - FPS) > 1e-6:
        models.syncnet = None
        models.unavailable["lse"] = f"the dataset is at {fps} fps; the SyncNet protocol needs {FPS} fps"
    scored: list[ClipResult] = []
    for entry in tqdm(results["clips"], desc="evaluate", unit="clip", disable=not progress):
        try:
            scored.append(evaluate_clip(entry, results_dir, clips, fps, models, window, vshift, heat_maps, device))
        except (VideoError, FileNotFoundError, DatasetError) as exc:
            raise ValueError(f"cannot evaluate results entry {entry.get('name')}: {exc}") from exc
    report: dict[str, Any] = {
        "format": "difftalk-metrics",
        "version": 1,
        "results_dir": str(results_dir),
        "data": str(data_path),
        "method": results.get("method"),
        "checkpoint": results.get("checkpoint"),
        "settings": results.get("settings", {}),
        "syncnet": str(syncnet) if syncnet is not None else None,
        "unavailable": models.unavailable,
        "summary": summarise(scored),
        "clips": [asdict(r) for r in scored],
    }
    with open(results_dir / METRICS_JSON, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(report), handle, indent=2, allow_nan=False)
    write_markdown(results_dir / METRICS_MD, report, scored)
    logger.info("wrote %s and %s", results_dir / METRICS_JSON, results_dir / METRICS_MD)
    return report
