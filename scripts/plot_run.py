"""Plot run folders' metrics.csv columns (raw and smoothed, against the step) into one PNG.

python scripts/plot_run.py runs/synth_128 docs/train_loss.png [--column loss] [--title ...]
python scripts/plot_run.py runs/a runs/b docs/curves.png --column loss --column mse_in_t300_700

With several runs or columns there is one panel per column and one smoothed line per run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _series(run_dir: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    with open(run_dir / "metrics.csv", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(column) not in (None, "", "nan")]
    steps = np.array([float(r["step"]) for r in rows])
    values = np.array([float(r[column]) for r in rows])
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="+", help="run folders, then the output PNG")
    parser.add_argument("--column", action="append", help="metrics.csv column (repeatable; default: loss)")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    *runs, output = args.paths
    if not runs:
        parser.error("give at least one run folder and the output PNG")
    columns = args.column or ["loss"]
    figure, axes = plt.subplots(1, len(columns), figsize=(7 if len(columns) == 1 else 4.2 * len(columns), 3.4))
    axes = np.atleast_1d(axes)
    for axis, column in zip(axes, columns, strict=True):
        for run in runs:
            steps, values = _series(run, column)
            if not len(values):
                continue
            window = max(1, len(values) // 25)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            if len(runs) == 1:
                axis.plot(steps, values, alpha=0.3, label=f"{column} (logged)")
                axis.plot(steps[window - 1 :], smooth, label=f"moving mean ({window} points)")
            else:
                axis.plot(steps[window - 1 :], smooth, label=run.name)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_title(column if len(columns) > 1 else (args.title or str(runs[0])), fontsize=9)
        axis.legend(fontsize=7)
    if args.title and len(columns) > 1:
        figure.suptitle(args.title, fontsize=10)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)


if __name__ == "__main__":
    main()
