"""Training-step throughput: the plain fp32 step (three encoder passes per sample, as the official code)
vs difftalk's step (latent cache; bf16 autocast on GPUs).

Runs ``difftalk train`` for ``--steps`` steps per variant on a prepared dataset with a random-weight
model (speed only) and reads the samples/s the trainer logs. Writes
benchmarks/results/train_step_<device>.{json,md}.

    python -m benchmarks.bench_train_step --data data/synth128 --config synth_128
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import torch

from benchmarks.common import write_results
from difftalk.config import load_config, replace
from difftalk.train.diffusion import train_diffusion


def run(config_name: str, data: str, steps: int, overrides: dict[str, object]) -> float:
    """Mean samples/s over the logged windows after the first (warm-up) one."""
    with tempfile.TemporaryDirectory() as run_dir:
        config = replace(
            load_config(config_name),
            {
                "data.data_dir": data,
                "train.autoencoder": "",
                "train.run_dir": run_dir,
                "train.steps": steps,
                "train.log_every": max(1, steps // 4),
                "train.sample_every": 0,
                "train.checkpoint_every": steps,
                **overrides,
            },
        )
        train_diffusion(config, progress=False)
        with open(Path(run_dir) / "metrics.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    rates = [float(r["samples_per_second"]) for r in rows[1:]] or [float(rows[0]["samples_per_second"])]
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="synth_128")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    variants = {
        "plain fp32 (encode target, masked, reference every step)": {
            "train.latent_cache": False,
            "train.precision": "32-true",
        },
        "latent cache, fp32": {"train.latent_cache": True, "train.precision": "32-true"},
    }
    if device == "cuda":
        variants["latent cache, bf16 (ours)"] = {"train.latent_cache": True, "train.precision": "bf16-mixed"}
    results = {name: run(args.config, args.data, args.steps, overrides) for name, overrides in variants.items()}
    base = next(iter(results.values()))
    label = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [
        f"# Training-step throughput on {label} ({args.config})",
        "",
        f"`python -m benchmarks.bench_train_step --data {args.data} --config {args.config}`",
        "",
        "| variant | samples / s | × plain |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {rate:.2f} | {rate / base:.2f} |" for name, rate in results.items()]
    write_results(f"train_step_{device}", {"config": args.config, "samples_per_second": results},
                  "\n".join(lines), out_dir=args.out)  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
