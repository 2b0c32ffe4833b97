"""Host memory (RSS of the trainer + DataLoader workers) over a training run: it must stay flat.

The official DiffTalk code grew host memory until it ran out (its issue #19: Python lists of every
sample under forked workers). This trains the ``tiny`` model on a prepared dataset with 2 DataLoader
workers, reading and decoding frames (no latent cache, the heavier path), for ``--epochs`` epochs,
while a thread samples the RSS of the process and its children every 0.5 s. Writes
benchmarks/results/train_memory.{json,md,png}.

    python -m benchmarks.bench_train_memory --data data/synth128 [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, write_results
from difftalk.config import load_config, replace
from difftalk.data.clips import open_clips
from difftalk.train.common import host_memory_mb
from difftalk.train.diffusion import train_diffusion

MAX_SAVED_SAMPLES = 200


def thin(samples: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` (≥ 2) evenly spaced items of ``samples``, always with the first and the last."""
    if len(samples) <= limit:
        return list(samples)
    indices = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in indices]


class MemorySampler(threading.Thread):
    """Samples (seconds, MiB) of this process and its children until stopped."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._start = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - self._start, host_memory_mb()))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="a prepared dataset (e.g. data/synth128)")
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs to run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    frames = sum(len(c.valid_frames) for c in open_clips(args.data, "train"))
    steps = max(1, int(args.epochs * frames / args.batch_size))
    with tempfile.TemporaryDirectory() as run_dir:
        config = replace(
            load_config("tiny"),
            {
                "data.data_dir": args.data,
                "data.num_workers": args.workers,
                "train.run_dir": run_dir,
                "train.steps": steps,
                "train.batch_size": args.batch_size,
                "train.latent_cache": False,
                "train.sample_every": 0,
                "train.checkpoint_every": steps,
                "train.log_every": 50,
            },
        )
        sampler = MemorySampler()
        sampler.start()
        start = time.perf_counter()
        train_diffusion(config, progress=False)
        wall = time.perf_counter() - start
        sampler.stop()
    t = np.array([s[0] for s in sampler.samples])
    mb = np.array([s[1] for s in sampler.samples])
    steady = mb[t > 0.2 * t[-1]]  # after start-up (imports, first worker spawn)
    slope = float(np.polyfit(t[t > 0.2 * t[-1]], steady, 1)[0] * 60) if steady.size > 2 else 0.0
    result = {
        "dataset_frames": frames,
        "steps": steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "wall_seconds": round(wall, 1),
        "rss_mb_start": round(float(mb[0]), 1),
        "rss_mb_steady_min": round(float(steady.min()), 1),
        "rss_mb_steady_max": round(float(steady.max()), 1),
        "rss_mb_end": round(float(mb[-1]), 1),
        "rss_slope_mb_per_minute": round(slope, 2),
        # at most MAX_SAVED_SAMPLES (time, MiB) pairs, evenly spaced (the full series is in the plot)
        "samples": [[round(a, 2), round(b, 1)] for a, b in thin(sampler.samples, MAX_SAVED_SAMPLES)],
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 3))
        axis.plot(t, mb)
        axis.set_xlabel("seconds")
        axis.set_ylabel("RSS, trainer + workers (MiB)")
        axis.set_title(f"{args.epochs:g} epochs, {args.workers} workers, batch {args.batch_size}")
        figure.tight_layout()
        (args.out or RESULTS).mkdir(parents=True, exist_ok=True)
        figure.savefig((args.out or RESULTS) / "train_memory.png", dpi=100)
    except ImportError:
        pass
    row = " | ".join(
        f"{result[key]} MiB" for key in ("rss_mb_start", "rss_mb_steady_min", "rss_mb_steady_max", "rss_mb_end")
    )
    markdown = "\n".join(
        [
            "# Host memory over a training run",
            "",
            f"`python -m benchmarks.bench_train_memory --data {args.data} --epochs {args.epochs:g}` — tiny model,",
            f"frames decoded by {args.workers} DataLoader workers (no latent cache), {steps} steps = "
            f"{args.epochs:g} epochs of {frames} frames. RSS counts the trainer and its worker processes.",
            "",
            "| RSS at start | steady min | steady max | at end | slope after start-up |",
            "|---|---|---|---|---|",
            f"| {row} | {result['rss_slope_mb_per_minute']} MiB/min |",
            "",
            f"Wall time {result['wall_seconds']} s. Plot: train_memory.png.",
        ]
    )
    path = write_results("train_memory", result, markdown, out_dir=args.out)
    print(markdown)
    print(path)


if __name__ == "__main__":
    main()
