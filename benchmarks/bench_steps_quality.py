"""Quality against sampler and steps on held-out synthetic identities (how much do fewer steps cost?).

Each run (``SAMPLER:STEPS`` or ``SAMPLER:STEPS:CHECKPOINT``, e.g. ``ddim:25``, ``dpmpp:8``,
``lcm:2:runs/distill/checkpoints/model``, optionally followed by ``@OPTION=VALUE,...`` of ``GenerateOptions``
on top of the demo's settings, e.g. ``ddim:5@silence_hold=4``) dubs the held-out clips through the real
pipeline (``difftalk benchmark``) self-driven and cross-driven, from the same seed, and is scored by
``difftalk evaluate`` (mouth PSNR/SSIM and LMD against ground truth, LSE-C by the given expert, jaw r and
articulation error, jitter ratio, the audio-dependence control). The first run is the reference: every other
run's mouths are also compared with it (PSNR/SSIM of the mouth region vs the reference).
Runs already scored with the same weights are reused. Writes benchmarks/results/<name>.{json,md}.

    python -m benchmarks.bench_steps_quality --data data/synth128 \\
        --checkpoint src/difftalk/assets/demo_model --syncnet src/difftalk/assets/demo_syncnet \\
        --runs ddim:25 ddim:10 dpmpp:10 dpmpp:5 unipc:10 unipc:5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import write_results
from difftalk.checkpoint import weights_sha256
from difftalk.config.fields import parse_overrides
from difftalk.data.clips import Clip
from difftalk.data.masks import mouth_box
from difftalk.diffusion import SAMPLERS
from difftalk.eval.benchmark import run_benchmark
from difftalk.eval.evaluate import evaluate_results
from difftalk.io.video import iter_frames
from difftalk.metrics.image import psnr, ssim
from difftalk.pipeline.options import GenerateOptions
from difftalk.preprocess.crop import crop_image

logger = logging.getLogger("bench_steps_quality")

DEMO_SETTINGS = {"lanes": 4, "progressive_reference": False, "noise": "shared", "seed": 0}
"""The demo's generation settings (docs/results.md §3): fixed reference, one noise draw; 4 lanes (the demo batches 8
since the source reader streams them; with a fixed reference and one noise draw lanes only batch the frames, so
the tables stay comparable with earlier ones)."""


@dataclass(frozen=True)
class RunSpec:
    """One generation setting: a sampler at a step count on a checkpoint."""

    sampler: str
    steps: int
    checkpoint: str
    options: tuple[tuple[str, Any], ...] = ()
    """``GenerateOptions`` fields set on top of :data:`DEMO_SETTINGS`."""

    @property
    def label(self) -> str:
        name = f"{self.sampler}:{self.steps}" + ("" if self.checkpoint == "" else f":{self.checkpoint_name}")
        return name + ("@" + ",".join(f"{k}={v}" for k, v in self.options) if self.options else "")

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint folder's name, or its run's for a ``<run>/checkpoints/model`` folder (all named model)."""
        path = Path(self.checkpoint)
        return path.parents[1].name if path.parent.name == "checkpoints" and len(path.parents) > 1 else path.name

    @property
    def folder_name(self) -> str:
        tag = "".join(c if c.isalnum() else "_" for c in self.checkpoint.strip("/"))[-40:]
        extra = "".join(f"__{k}_{v}" for k, v in self.options)
        return f"{self.sampler}_{self.steps}__{tag}{extra}"


def parse_run(text: str, default_checkpoint: str) -> RunSpec:
    """``SAMPLER:STEPS[:CHECKPOINT][@OPTION=VALUE,...]`` → :class:`RunSpec`."""
    text, _, extra = text.partition("@")
    options = parse_overrides(extra.split(",")) if extra else {}
    known = {f.name for f in dataclasses.fields(GenerateOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"run option(s) {', '.join(unknown)}: not GenerateOptions fields")
    parts = text.split(":", 2)
    if len(parts) < 2 or parts[0] not in SAMPLERS or not parts[1].isdigit() or int(parts[1]) < 1:
        raise argparse.ArgumentTypeError(
            f"run {text!r}: write SAMPLER:STEPS[:CHECKPOINT] with SAMPLER one of {', '.join(SAMPLERS)}"
        )
    checkpoint = parts[2] if len(parts) == 3 else default_checkpoint
    return RunSpec(parts[0], int(parts[1]), checkpoint, tuple(sorted(options.items())))


def mouth_crops(video: Path, clip: Clip, frames: int) -> list[np.ndarray]:
    """The mouth regions of the first ``frames`` frames of a generated ``video`` (cut like evaluate does)."""
    out = []
    size = clip.crop_size
    for index, frame in enumerate(iter_frames(video)):
        if index >= frames:
            break
        crop = crop_image(frame, clip.boxes[index], size)
        top, bottom, left, right = mouth_box(clip.landmarks_at(index), size)
        out.append(crop[top:bottom, left:right])
    return out


WEIGHTS_MARKER = "weights.sha256"
"""In a scored folder: the SHA-256 of the weights it was generated with (reused only while they match)."""
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def score_run(
    spec: RunSpec,
    data: str,
    root: Path,
    syncnet: str | None,
    seconds: float,
    max_clips: int | None,
    device: str,
    dtype: str = "fp32",
) -> dict[str, Path]:
    """Generate and evaluate ``spec`` self- and cross-driven (reusing folders scored with the same weights:
    a folder is named by the checkpoint's path, and a path can be given new weights); the two folders."""
    folders = {}
    weights = weights_sha256(spec.checkpoint) if spec.checkpoint else "random"
    for mode in ("self", "cross"):
        folder = root / (spec.folder_name + ("" if dtype == "fp32" else f"__{dtype}")) / mode
        marker = folder / WEIGHTS_MARKER
        current = (folder / "metrics.json").is_file() and marker.is_file() and marker.read_text().strip() == weights
        if not current:
            marker.unlink(missing_ok=True)
            settings = {**DEMO_SETTINGS, **dict(spec.options)}
            options = GenerateOptions(num_steps=spec.steps, sampler=spec.sampler, **settings)
            run_benchmark(data, folder, checkpoint=spec.checkpoint, seconds=seconds, cross_audio=mode == "cross",
                          options=options, device=device, max_clips=max_clips, dtype=DTYPES[dtype])  # fmt: skip
            evaluate_results(folder, data, syncnet, progress=False)
            marker.write_text(weights + "\n")
        folders[mode] = folder
    return folders


def compare_mouths(folder: Path, reference: Path, data: str) -> tuple[float, float]:
    """Mean (SSIM, PSNR) of ``folder``'s mouth regions against ``reference``'s (same clips, same frames)."""
    results = json.loads((reference / "results.json").read_text())
    ssims, psnrs = [], []
    for entry in results["clips"]:
        clip = Clip.open(Path(data) / "clips" / entry["name"])
        ours = mouth_crops(folder / entry["video"], clip, entry["num_frames"])
        best = mouth_crops(reference / entry["video"], clip, entry["num_frames"])
        ssims += [ssim(a, b) for a, b in zip(ours, best, strict=True)]
        psnrs += [psnr(a, b) for a, b in zip(ours, best, strict=True)]
    finite = [p for p in psnrs if np.isfinite(p)]
    return float(np.mean(ssims)), float(np.mean(finite)) if finite else float("inf")


def quality_rows(
    specs: list[RunSpec],
    data: str,
    root: Path,
    syncnet: str | None,
    seconds: float = 2.0,
    max_clips: int | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
) -> list[dict[str, Any]]:
    """One row of quality columns per run; the first run is the reference of the ``vs_ref`` columns.

    ``dtype`` (fp32, fp16, bf16) applies to every run but the first, which stays fp32 (the reference)."""
    # a list, not a dict by run: the same run twice (the fp32 reference and its bf16 twin) gives two rows
    runs = [
        score_run(spec, data, root, syncnet, seconds, max_clips, device, "fp32" if i == 0 else dtype)
        for i, spec in enumerate(specs)
    ]
    reference = runs[0]["self"]
    rows = []
    for i, (spec, folders) in enumerate(zip(specs, runs, strict=True)):
        own = json.loads((folders["self"] / "metrics.json").read_text())["summary"]["self_driven"]
        cross = json.loads((folders["cross"] / "metrics.json").read_text())["summary"]["cross_driven"]
        ssim_ref, psnr_ref = compare_mouths(folders["self"], reference, data)
        rows.append(
            {
                "run": spec.label + ("" if i == 0 or dtype == "fp32" else f" {dtype}"),
                "sampler": spec.sampler,
                "steps": spec.steps,
                "checkpoint": spec.checkpoint,
                "psnr_mouth": own.get("psnr_mouth"),
                "ssim_mouth": own.get("ssim_mouth"),
                "lmd": own.get("lmd"),
                "lse_c_self": own.get("lse_c"),
                "lse_c_cross": cross.get("lse_c"),
                "jaw_corr_self": own.get("jaw_corr"),
                "jaw_corr_cross": cross.get("jaw_corr"),
                "articulation_mae_self": own.get("articulation_mae"),
                "jitter_ratio": own.get("jitter_ratio"),
                "jaw_corr_vs_source": cross.get("jaw_corr_source"),
                "ssim_mouth_vs_ref": ssim_ref,
                "psnr_mouth_vs_ref": psnr_ref,
            }
        )
    return rows


QUALITY_COLUMNS = [
    ("psnr_mouth", "PSNR mouth ↑"),
    ("ssim_mouth", "SSIM mouth ↑"),
    ("lse_c_self", "LSE-C self ↑"),
    ("lse_c_cross", "LSE-C cross ↑"),
    ("jaw_corr_self", "jaw r self ↑"),
    ("jaw_corr_cross", "jaw r cross ↑"),
    ("jitter_ratio", "jitter ratio"),
    ("jaw_corr_vs_source", "jaw r vs source ↓"),
    ("psnr_mouth_vs_ref", "PSNR mouth vs first run"),
]


def cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) and np.isfinite(value) else ("inf" if value else "–")


def markdown_table(rows: list[dict[str, Any]], first: list[tuple[str, str]], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with the ``first`` then the ``columns`` (key, header) pairs."""
    header = [title for _, title in first + columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(key)) if i >= len(first) else str(row.get(key))
                                       for i, (key, _) in enumerate(first + columns)) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the model of runs that name none")
    parser.add_argument("--data", required=True)
    parser.add_argument("--syncnet", help="sync expert for evaluate (a held-out one; optional)")
    parser.add_argument("--runs", nargs="+", default=["ddim:25", "ddim:10"], help="SAMPLER:STEPS[:CHECKPOINT] ...")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-clips", type=int, help="only the first held-out clips (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="precision of every run but the first")
    parser.add_argument("--root", type=Path, default=Path("runs/steps_quality"), help="where the runs are kept")
    parser.add_argument("--name", default="steps_quality", help="results file name")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = [parse_run(text, args.checkpoint) for text in args.runs]
    rows = quality_rows(
        specs, args.data, args.root, args.syncnet, args.seconds, args.max_clips, args.device, args.dtype
    )
    clips = f"{args.max_clips} held-out clips" if args.max_clips else "all held-out clips"
    lines = [
        "# Quality against sampler and steps (held-out synthetic identities)",
        "",
        f"`python -m benchmarks.bench_steps_quality --checkpoint {args.checkpoint} --data {args.data} "
        f"--syncnet {args.syncnet} --runs {' '.join(args.runs)}"
        + (f" --dtype {args.dtype}" if args.dtype != "fp32" else "")
        + "`",
        "",
        f"{clips} × {args.seconds:g} s, self- and cross-driven, the demo's settings (fixed reference, one noise "
        "draw, 4 lanes), seed 0; the last column compares each run's mouths with the first run's.",
        "",
        markdown_table(rows, [("run", "run")], QUALITY_COLUMNS),
    ]
    write_results(args.name, {"rows": rows}, "\n".join(lines), out_dir=args.out)
    logger.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
