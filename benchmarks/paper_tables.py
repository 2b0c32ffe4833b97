"""Reproduce the paper's ablations on held-out synthetic identities, each table by one command.

    python -m benchmarks.paper_tables --table smoothing     # Table 1: audio smoothing on/off
    python -m benchmarks.paper_tables --table progressive   # Table 2: progressive reference on/off
    python -m benchmarks.paper_tables --table conditions    # Figure 6: A, A+L, A+L+R, A+L+M, A+L+M+R
    python -m benchmarks.paper_tables --table baselines     # Table 3: vs no-change, static-mouth and LipGAN
    python -m benchmarks.paper_tables --table context       # one [a; l] token vs multi-token context
    python -m benchmarks.paper_tables --table noise         # DDIM noise per frame vs shared by the video
    python -m benchmarks.paper_tables --table recipe --seeds 0,1   # the training-recipe levers (issue 12)
    python -m benchmarks.paper_tables --table inference     # reference and noise choices on the recipe model
    python -m benchmarks.paper_tables --table guidance --seeds 0,1 --lipgan-syncnet OTHER_EXPERT  # audio CFG vs GAN
    python -m benchmarks.paper_tables --table all

Every variant is trained with the same recipe and budget at "ablation scale" (the ``synth_128``
preset with a 2.2M-parameter UNet, ``--steps`` steps, the autoencoder of the main run), then the
held-out identities are generated self-driven (pixel ground truth) and cross-driven (another clip's
audio) and scored by ``difftalk evaluate`` with the sync expert trained on the same data. Runs that
exist are reused, so a table can be rebuilt after an interruption. Writes
benchmarks/results/paper_<table>.{json,md}.

Another dataset or scale: ``--config`` (preset or YAML the variants start from), ``--set key=value``
(applied last to every variant, e.g. to undo the ablation-scale UNet), ``--device cuda`` for
generation and scoring (training picks the accelerator itself). A changed recipe gets its own run
and result folders under ``--root``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from difftalk.config import (
    LipGANConfig,
    LipGANTrainConfig,
    SyncNetTrainConfig,
    load_config,
    parse_overrides,
    replace,
)
from difftalk.config.syncnet import syncnet_preset
from difftalk.data.clips import load_manifest
from difftalk.eval.benchmark import run_benchmark
from difftalk.eval.evaluate import evaluate_results
from difftalk.pipeline.options import GenerateOptions
from difftalk.train.diffusion import train_diffusion
from difftalk.train.lipgan import train_lipgan
from difftalk.train.syncnet import train_syncnet

logger = logging.getLogger("paper_tables")

ABLATION_SCALE: dict[str, Any] = {
    "model.unet.block_out_channels": [32, 64, 128],
    "model.unet.layers_per_block": 1,
    "model.unet.attention_levels": [False, True, True],
    "train.learning_rate": 3e-4,
    "train.warmup_steps": 100,
    "train.sample_every": 0,
    "train.checkpoint_every": 250,
    "train.log_every": 25,
    "train.ema_decay": 0.995,
    # the paper's recipe (synth_128 itself trains the shipped model with the recipe of docs/results.md §8)
    "train.min_snr_gamma": 0.0,
    "train.mask_loss_outside": 1.0,
    "model.masked_target": "pixel",
    "model.audio_encoder.filter_init": "uniform",
    "model.context": "single_token",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_smoothing": {"model.audio_encoder.temporal_filter": "none"},
    "conv_softmax_smoothing": {"model.audio_encoder.temporal_filter": "conv_softmax"},
    "A": {"model.use_landmarks": False, "model.use_reference": False, "model.use_masked_target": False},
    "A+L": {"model.use_reference": False, "model.use_masked_target": False},
    "A+L+R": {"model.use_masked_target": False},
    "A+L+M": {"model.use_reference": False},
    "multi_token": {"model.context": "multi_token"},
    # the training-recipe levers: each alone, then together
    "min_snr_mask": {"train.min_snr_gamma": 5.0, "train.mask_loss_outside": 0.1},
    "latent_mask": {"model.masked_target": "latent"},
    "centre_filter": {"model.audio_encoder.filter_init": "centre"},
    "recipe": {
        "train.min_snr_gamma": 5.0,
        "train.mask_loss_outside": 0.1,
        "model.masked_target": "latent",
        "model.audio_encoder.filter_init": "centre",
        "model.context": "multi_token",
    },
}
VARIANTS["recipe_dropout"] = {**VARIANTS["recipe"], "train.audio_dropout": 0.2}  # for audio guidance

FIXED_REFERENCE = {"progressive_reference": False}

LATENT_CHAIN = {"reference_update": "latent"}
"""Progressive reference passing on the generated latent itself (``GenerateOptions.reference_update``)."""

TABLES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    # (row label, variant, generation options)
    "smoothing": [
        ("self-attention smoothing (paper)", "full", {}),
        ("conv + softmax smoothing (official code)", "conv_softmax_smoothing", {}),
        ("no smoothing", "no_smoothing", {}),
    ],
    "progressive": [
        ("progressive reference (paper)", "full", {}),
        ("fixed reference", "full", {"progressive_reference": False}),
    ],
    "conditions": [
        ("A", "A", {}),
        ("A+L", "A+L", {}),
        ("A+L+R", "A+L+R", {}),
        ("A+L+M", "A+L+M", {}),
        ("A+L+M+R (full)", "full", {}),
    ],
    "baselines": [
        ("no change (source video)", "source", {}),
        ("static mouth (copy reference)", "static", {}),
        ("Wav2Lip-style GAN (same data, same steps)", "lipgan", {}),
        ("difftalk (ablation scale)", "full", {}),
    ],
    "noise": [
        # not in the paper: one draw of DDIM noise for the whole video instead of one per frame
        ("new noise per frame (fixed reference)", "full", {"progressive_reference": False}),
        ("shared noise (fixed reference)", "full", {"progressive_reference": False, "noise": "shared"}),
    ],
    "context": [
        ("one [a; l] token (official)", "full", {}),
        ("multi-token context", "multi_token", {}),
    ],
    "inference": [
        # the inference defaults, measured on the recipe model (issue 12)
        ("progressive reference, latent chain", "recipe", LATENT_CHAIN),
        ("progressive reference, composite (default)", "recipe", {}),
        ("fixed reference", "recipe", {"progressive_reference": False}),
        ("paper recipe, progressive reference, composite", "full", {}),
    ],
    "recipe": [
        # measured with the latent-chain progressive reference (the default while these runs were scored)
        ("paper recipe", "full", LATENT_CHAIN),
        ("min-SNR-5 + mouth-weighted loss", "min_snr_mask", LATENT_CHAIN),
        ("latent masked target", "latent_mask", LATENT_CHAIN),
        ("smoothing starts at the centre frame", "centre_filter", LATENT_CHAIN),
        ("multi-token context", "multi_token", LATENT_CHAIN),
        ("all five levers", "recipe", LATENT_CHAIN),
    ],
    "guidance": [
        # classifier-free guidance on the audio (issue 12), fixed reference (the recipe model's best, §8)
        ("recipe + audio dropout 0.2, no guidance", "recipe_dropout", FIXED_REFERENCE),
        ("recipe + audio dropout 0.2, audio guidance 2", "recipe_dropout", {**FIXED_REFERENCE, "audio_guidance": 2.0}),
        ("Wav2Lip-style GAN (same data, same steps)", "lipgan", {}),
    ],
}

COLUMNS = [
    ("psnr_mouth", "PSNR mouth ↑"),
    ("ssim_mouth", "SSIM mouth ↑"),
    ("lse_c", "LSE-C ↑"),
    ("lse_d", "LSE-D ↓"),
    ("articulation_mae", "artic. MAE ↓"),
    ("jaw_corr", "jaw r ↑"),
    ("jitter_ratio", "jitter ratio →1"),
]
CONTROL_COLUMNS = [
    ("jaw_corr_source", "jaw r vs source ↓ (cross)"),
    ("lse_c_source", "LSE-C vs source ↓ (cross)"),
]
"""The audio-dependence control: a cross-driven video scored against its source clip (must be low)."""


def ensure_syncnet(data: str, root: Path, steps: int) -> Path:
    """The sync expert used by every table (trained once on the same data)."""
    run_dir = root / "syncnet"
    model_dir = run_dir / "checkpoints" / "syncnet"
    if not (model_dir / "config.json").is_file():
        config = SyncNetTrainConfig(model=syncnet_preset("small"), steps=steps, data_dir=data, run_dir=str(run_dir))
        train_syncnet(config, progress=False)
    return model_dir


def recipe_tag(config: str, overrides: dict[str, Any]) -> str:
    """``""`` for the standard recipe (``synth_128`` at ablation scale), else a short hash of the changes."""
    if config == "synth_128" and not overrides:
        return ""
    return "cfg-" + hashlib.sha1(json.dumps([config, overrides], sort_keys=True).encode()).hexdigest()[:8]


def recipe_run_dir(root: Path, name: str, config: str, overrides: dict[str, Any]) -> Path:
    """``root/runs/<name>`` for the standard recipe, ``root/runs/<name>_<recipe tag>`` for a changed one."""
    tag = recipe_tag(config, overrides)
    return root / "runs" / (f"{name}_{tag}" if tag else name)


def seeded(name: str, seed: int) -> str:
    """Run and result name of a variant trained with ``seed`` (seed 0 keeps the plain name)."""
    return name if seed == 0 else f"{name}_seed{seed}"


def ensure_model(
    variant: str,
    data: str,
    root: Path,
    steps: int,
    autoencoder: str,
    config: str = "synth_128",
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Train the ablation-scale model of ``variant`` unless it is already trained.

    ``config`` is the preset (or YAML) trained from; ``overrides`` (``--set``) apply last, after the
    ablation scale and the variant's own changes. ``seed`` 0 is the runs' historical name; other seeds
    train ``<variant>_seed<k>`` with ``train.seed=k`` (initial weights, noise, t and sample order).
    """
    run_dir = recipe_run_dir(root, seeded(variant, seed), config, overrides or {})
    model_dir = run_dir / "checkpoints" / "model"
    final = run_dir / "final.json"
    if final.is_file() and json.loads(final.read_text())["step"] >= steps:
        return model_dir
    changes = {**ABLATION_SCALE, **VARIANTS[variant], "train.steps": steps, "train.run_dir": str(run_dir)}
    changes |= {"train.seed": seed} if seed else {}
    changes |= {"data.data_dir": data, "train.autoencoder": autoencoder, **(overrides or {})}
    trained = replace(load_config(config), changes)
    logger.info("training %s for %d steps", variant, steps)
    train_diffusion(trained, progress=False)
    return model_dir


def lipgan_name(loss_expert: Path | None) -> str:
    """``lipgan`` for the GAN trained against the scoring expert (Table 3), ``lipgan_<hash>`` for one trained
    against another expert (``--lipgan-syncnet``), whose LSE is then not scored by its own loss."""
    if loss_expert is None:
        return "lipgan"
    return "lipgan_" + hashlib.sha256(str(loss_expert).encode()).hexdigest()[:8]


def ensure_lipgan(
    data: str,
    root: Path,
    steps: int,
    syncnet: Path,
    config: str = "synth_128",
    overrides: dict[str, Any] | None = None,
    name: str = "lipgan",
) -> Path:
    """Train (or resume) the Wav2Lip-style GAN on the variants' data, steps, frames per step and learning rate.

    A GAN sample is a window of 5 frames, so ``batch_size`` windows = the diffusion recipe's batch / 5
    (synth_128: 3 windows = 15 frames against 16); the learning rate is the recipe's (ablation scale:
    3e-4; Wav2Lip's own 1e-4 is tuned for ~10^5 steps). The generator sees crops of the dataset's size.
    ``syncnet`` is the expert of its sync loss; ``name`` its run folder's (see :func:`lipgan_name`).
    """
    overrides = overrides or {}
    recipe = replace(load_config(config), {**ABLATION_SCALE, **overrides}).train
    run_dir = recipe_run_dir(root, name, config, overrides)
    frames = LipGANTrainConfig().frames_per_sample
    trained = LipGANTrainConfig(
        model=LipGANConfig(image_size=int(load_manifest(data)["crop_size"])),
        syncnet=str(syncnet),
        steps=steps,
        batch_size=max(1, round(recipe.batch_size / frames)),
        learning_rate=recipe.learning_rate,
        checkpoint_every=250,
        data_dir=data,
        run_dir=str(run_dir),
    )
    logger.info("training (or resuming) the LipGAN baseline to %d steps", steps)
    return train_lipgan(trained, resume=True, progress=False).model_dir


def score(name: str, variant: str, model: Path | None, options: dict[str, Any], args: argparse.Namespace,
          syncnet: Path, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Benchmark + evaluate one row, self-driven and cross-driven (cached by what was run, not by label)."""
    row: dict[str, Any] = {"row": name, "variant": variant, "options": options, "seed": seed}
    method = variant if variant in ("source", "static", "lipgan") else "difftalk"
    name_part = "main" if variant == "full" and args.full_model else seeded(variant.replace("+", "p"), seed)
    if variant == "lipgan":
        name_part = lipgan_name(args.lipgan_syncnet)
    trained_here = name_part != "main" and variant not in ("source", "static")
    recipe = recipe_tag(args.config, args.overrides)
    # a longer run, or one of another recipe, never reuses results
    budget = [f"steps-{args.steps}", *([recipe] if recipe else [])] if trained_here else []
    generation = [f"s{args.seconds:g}", f"n{args.max_clips or 'all'}", f"ddim{args.ddim_steps}"]
    generation += [] if args.split == "test" else [args.split]
    tag = "_".join([name_part, *budget, *generation, *(f"{k}-{v}" for k, v in sorted(options.items()))])
    for mode in ("self", "cross"):
        out = Path(args.root) / "results" / f"{tag}_{mode}"
        if not (out / "metrics.json").is_file():
            run_benchmark(
                args.data,
                out,
                checkpoint=model,
                method=method,  # type: ignore[arg-type]
                seconds=args.seconds,
                cross_audio=mode == "cross",
                options=GenerateOptions(num_steps=args.ddim_steps, lanes=args.lanes, **options),
                max_clips=args.max_clips,
                split=args.split,
                device=args.device,
            )
            evaluate_results(
                out, args.data, syncnet, lpips_weights=args.lpips_weights, device=args.device, progress=False
            )
        metrics = json.loads((out / "metrics.json").read_text())
        key = "self_driven" if mode == "self" else "cross_driven"
        if key not in metrics.get("summary", {}):
            raise RuntimeError(f"{out}/metrics.json has no {key} summary; delete the folder and rerun")
        row[mode] = metrics["summary"][key]
    return row


def mean_row(label: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of every numeric metric over rows of the same variant (one per seed)."""
    out: dict[str, Any] = {"row": label, "variant": rows[0]["variant"], "options": rows[0]["options"], "seeds": []}
    out["seeds"] = [r["seed"] for r in rows]
    for mode in ("self", "cross"):
        keys = {k for r in rows for k, v in r[mode].items() if isinstance(v, (int, float))}
        out[mode] = {
            k: sum(r[mode][k] for r in rows) / len(rows)
            for k in sorted(keys)
            if all(isinstance(r[mode].get(k), (int, float)) for r in rows)
        }
    return out


def table_markdown(table: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def value(part: dict[str, Any], key: str) -> str:
        v = part.get(key)
        return f"{v:.3f}" if isinstance(v, (int, float)) else "–"

    lines = [
        f"# {table}",
        "",
        f"`python -m benchmarks.paper_tables {' '.join(sys.argv[1:])}` — "
        f"{rows[0]['self'].get('num_clips', '?') if rows else 0} "
        f"{'held-out identities' if args.split == 'test' else f'{args.split} clips'}, "
        f"{args.seconds:g} s per clip, DDIM {args.ddim_steps}, trained variants at ablation scale "
        f"({args.steps} steps each) unless a checkpoint is named.",
        "",
        "| variant | "
        + " | ".join(f"{label} (self)" for _, label in COLUMNS[:2])
        + " | "
        + " | ".join(f"{label} (self / cross)" for _, label in COLUMNS[2:])
        + " | "
        + " | ".join(label for _, label in CONTROL_COLUMNS)
        + " |",
        "|---" * (1 + len(COLUMNS) + len(CONTROL_COLUMNS)) + "|",
    ]
    for row in rows:
        cells = [value(row["self"], key) for key, _ in COLUMNS[:2]]
        cells += [f"{value(row['self'], key)} / {value(row['cross'], key)}" for key, _ in COLUMNS[2:]]
        cells += [value(row["cross"], key) for key, _ in CONTROL_COLUMNS]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=[*TABLES, "all"], default="all")
    parser.add_argument("--data", default="data/synth128")
    parser.add_argument("--autoencoder", default="runs/synth_128_autoencoder_aug/checkpoints/autoencoder")
    parser.add_argument("--config", default="synth_128", help="preset or YAML the variants are trained from")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a training field of every variant (last)"
    )
    parser.add_argument("--syncnet", type=Path, help="an existing sync expert (default: train one under --root)")
    parser.add_argument(
        "--lipgan-syncnet",
        type=Path,
        help="the expert of the GAN baseline's sync loss (default: --syncnet, the one that scores LSE, which "
        "flatters the GAN; give another, e.g. one trained with another seed)",
    )
    parser.add_argument("--full-model", type=Path, help="use this checkpoint for the 'full' rows (e.g. the main run)")
    parser.add_argument("--skip", action="append", default=[], help="leave out rows of this variant (repeatable)")
    parser.add_argument("--only", action="append", default=[], help="keep only rows of this variant (repeatable)")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated training seeds of every trained variant (a mean row follows)"
    )
    parser.add_argument("--root", default="runs/paper_tables", help="where runs and results go")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per variant (800 learned no lip sync)")
    parser.add_argument("--syncnet-steps", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds generated per held-out clip")
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--max-clips", type=int, help="only the first held-out clips")
    parser.add_argument("--device", default="cpu", help="torch device for generation and scoring (training: auto)")
    parser.add_argument("--lpips-weights", type=Path, help="folder with the LPIPS weights (else LPIPS is unavailable)")
    parser.add_argument("--split", default="test", help="the clips generated and scored (test = held-out identities)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    args.overrides = parse_overrides(args.set)
    args.seeds = [int(v) for v in str(args.seeds).split(",") if v.strip()]
    replace(load_config(args.config), args.overrides)  # a bad --config or --set fails here, before any training
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    root = Path(args.root)
    syncnet = args.syncnet or ensure_syncnet(args.data, root, args.syncnet_steps)
    for table in TABLES if args.table == "all" else [args.table]:
        rows = []
        for label, variant, options in TABLES[table]:
            if variant in args.skip or (args.only and variant not in args.only):
                continue
            trained_here = variant not in ("source", "static", "lipgan") and not (variant == "full" and args.full_model)
            seeds = args.seeds if trained_here else [0]
            seed_rows = []
            for seed in seeds:
                model = None
                row_label = f"{label} (seed {seed})" if len(seeds) > 1 else label
                if variant == "full" and args.full_model:
                    model = args.full_model
                    row_label = f"{label.replace(' (ablation scale)', '')} ({args.full_model})"
                elif variant == "lipgan":
                    loss_expert, name = args.lipgan_syncnet or syncnet, lipgan_name(args.lipgan_syncnet)
                    model = ensure_lipgan(args.data, root, args.steps, loss_expert, args.config, args.overrides, name)
                elif variant not in ("source", "static"):
                    model = ensure_model(
                        variant, args.data, root, args.steps, args.autoencoder, args.config, args.overrides, seed
                    )
                seed_rows.append(score(row_label, variant, model, options, args, syncnet, seed))
            rows += seed_rows
            if len(seed_rows) > 1:
                rows.append(mean_row(f"{label} (mean of {len(seed_rows)} seeds)", seed_rows))
        markdown = table_markdown(table, rows, args)
        write_results(f"paper_{table}", {"table": table, "rows": rows}, markdown, out_dir=args.out)
        print(markdown)


if __name__ == "__main__":
    main()
