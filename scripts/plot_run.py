"""Plot a run folder's metrics.csv (loss, raw and smoothed, against the step) into a PNG.

python scripts/plot_run.py runs/synth_128 docs/train_loss.png [--column loss] [--title ...]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--column", default="loss")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    with open(args.run_dir / "metrics.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    steps = np.array([float(r["step"]) for r in rows])
    values = np.array([float(r[args.column]) for r in rows])
    window = max(1, len(values) // 25)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.plot(steps, values, alpha=0.3, label=f"{args.column} (logged)")
    axis.plot(steps[window - 1 :], smooth, label=f"moving mean ({window} points)")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel(args.column)
    axis.set_title(args.title or str(args.run_dir))
    axis.legend()
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)


if __name__ == "__main__":
    main()
