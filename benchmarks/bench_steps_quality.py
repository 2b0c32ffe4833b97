"""Quality vs DDIM step count on held-out synthetic identities (how much do fewer steps cost?).

Generates the held-out clips (self-driven) with 200/50/20/10 DDIM steps from the same seed, scores
each run with ``difftalk evaluate`` (against ground truth) and compares every run's mouth region
with the 200-step output (SSIM/PSNR of N-step vs 200-step). Writes
benchmarks/results/steps_quality.{json,md}.

    python -m benchmarks.bench_steps_quality --checkpoint runs/synth_128/checkpoints/model --data data/synth128
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import write_results
from difftalk.data.clips import Clip
from difftalk.data.masks import mouth_box
from difftalk.eval.benchmark import run_benchmark
from difftalk.eval.evaluate import evaluate_results
from difftalk.io.video import iter_frames
from difftalk.metrics.image import psnr, ssim
from difftalk.pipeline.options import GenerateOptions
from difftalk.preprocess.crop import crop_image


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--syncnet", help="sync expert for evaluate (optional)")
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 50, 20, 10])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-clips", type=int, default=4)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--root", default="runs/steps_quality")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    runs = {}
    for steps in args.steps:
        folder = Path(args.root) / f"ddim_{steps}"
        if not (folder / "metrics.json").is_file():
            options = GenerateOptions(num_steps=steps, lanes=args.lanes, seed=0)
            run_benchmark(args.data, folder, checkpoint=args.checkpoint, seconds=args.seconds,
                          options=options, max_clips=args.max_clips)  # fmt: skip
            evaluate_results(folder, args.data, args.syncnet, progress=False)
        runs[steps] = folder
    reference_steps = max(args.steps)
    results = json.loads((runs[reference_steps] / "results.json").read_text())
    rows = []
    for steps, folder in runs.items():
        summary = json.loads((folder / "metrics.json").read_text())["summary"]["self_driven"]
        ssims, psnrs = [], []
        for entry in results["clips"]:
            clip = Clip.open(Path(args.data) / "clips" / entry["name"])
            ours = mouth_crops(folder / entry["video"], clip, entry["num_frames"])
            best = mouth_crops(runs[reference_steps] / entry["video"], clip, entry["num_frames"])
            ssims += [ssim(a, b) for a, b in zip(ours, best, strict=True)]
            psnrs += [psnr(a, b) for a, b in zip(ours, best, strict=True)]
        finite = [p for p in psnrs if np.isfinite(p)]
        rows.append(
            {
                "steps": steps,
                "ssim_mouth_vs_gt": summary.get("ssim_mouth"),
                "articulation_mae": summary.get("articulation_mae"),
                "jaw_corr": summary.get("jaw_corr"),
                "lse_c": summary.get("lse_c"),
                f"ssim_mouth_vs_{reference_steps}": float(np.mean(ssims)),
                f"psnr_mouth_vs_{reference_steps}": float(np.mean(finite)) if finite else float("inf"),
            }
        )

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else "–"

    lines = [
        "# Quality vs DDIM steps (held-out synthetic identities, self-driven)",
        "",
        f"`python -m benchmarks.bench_steps_quality --checkpoint {args.checkpoint} --data {args.data}`",
        "",
        "| DDIM steps | SSIM mouth vs GT ↑ | artic. MAE ↓ | jaw r ↑ | LSE-C ↑ "
        f"| SSIM mouth vs {reference_steps} steps | PSNR mouth vs {reference_steps} steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['steps']} | {cell(row['ssim_mouth_vs_gt'])} | {cell(row['articulation_mae'])} | "
            f"{cell(row['jaw_corr'])} | {cell(row['lse_c'])} | {cell(row[f'ssim_mouth_vs_{reference_steps}'])} | "
            f"{cell(row[f'psnr_mouth_vs_{reference_steps}'])} |"
        )
    write_results("steps_quality", {"rows": rows}, "\n".join(lines), out_dir=args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
