"""Generation speed: the plain baseline vs difftalk's optimised sampler, each optimisation on its own.

Per-frame latency, throughput (frames/s) and peak accelerator memory of the denoising loop that makes
one output frame (image-condition encoding, DDIM, decoding), for DDIM 200/50/20/10 steps:

* ``baseline``: the paper-size model in fp32, eager, one frame at a time, the reference and masked
  frames re-encoded for every frame and the audio/landmark context re-encoded at every step — the
  way the official code runs;
* then one optimisation at a time: context once per frame, bf16, channels-last, torch.compile,
  batching K frames (chunked progressive reference), and all together (``ours``).

Random weights: speed does not depend on their values. ``--device cpu --tiny`` runs tiny configs in
seconds (the test suite does this so the script cannot rot); GPU numbers come from ``--device cuda``.
Writes benchmarks/results/generate_<device>.{json,md}.

    python -m benchmarks.bench_generate --device cuda             # 256² (paper_256) and 512² (paper_512)
    python -m benchmarks.bench_generate --device cpu --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.common import write_results
from difftalk.config import DiffTalkConfig, load_config, replace
from difftalk.diffusion.ddim import randn, sample_ddim
from difftalk.models.difftalk import DiffTalkModel


@dataclass(frozen=True)
class Variant:
    """One way of running the sampler."""

    name: str
    context_once: bool = False
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    batch: int = 1
    reencode_per_frame: bool = True


VARIANTS = [
    Variant("baseline"),
    Variant("context once", context_once=True),
    Variant("bf16", bf16=True),
    Variant("channels_last", channels_last=True),
    Variant("torch.compile", compile=True),
    Variant("batch 16 (chunked progressive)", batch=16, reencode_per_frame=False),
    Variant("ours (all)", context_once=True, bf16=True, channels_last=True, compile=True, batch=16,
            reencode_per_frame=False),
]  # fmt: skip


@dataclass
class Measurement:
    preset: str
    variant: str
    steps: int
    ms_per_frame: float
    frames_per_second: float
    peak_memory_mb: float | None
    notes: list[str] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
        yield


def build(config: DiffTalkConfig, device: torch.device, variant: Variant) -> DiffTalkModel:
    model = DiffTalkModel(replace(config.model, {"unet.zero_init": False})).to(device).eval()
    if variant.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    if variant.compile:
        model.unet = torch.compile(model.unet, dynamic=False)
    return model


@torch.no_grad()
def run_frames(model: DiffTalkModel, device: torch.device, variant: Variant, steps: int, frames: int) -> None:
    """Generate ``frames`` frames the way ``variant`` says (random inputs of the right shapes)."""
    cfg = model.config
    size, audio = cfg.autoencoder.image_size, cfg.audio_encoder
    generator = torch.Generator().manual_seed(0)
    batch = variant.batch
    images = torch.rand(batch, 3, size, size, generator=generator).to(device) * 2 - 1
    mask = torch.zeros(batch, 1, cfg.autoencoder.latent_size, cfg.autoencoder.latent_size, device=device)
    mask[..., cfg.autoencoder.latent_size // 2 :, :] = 1
    features = torch.randn(batch, audio.context_frames, audio.window, audio.feature_dim, generator=generator).to(device)
    landmarks = (torch.rand(batch, cfg.landmark_encoder.num_points, 2, generator=generator) * 2 - 1).to(device)
    with _autocast(device, variant.bf16):
        conditions = None
        for start in range(0, frames, batch):
            if conditions is None or variant.reencode_per_frame:
                conditions = model.prepare_conditions(
                    audio_features=features, landmarks=landmarks, reference_frames=images, masked_frames=images
                )
                known = model.encode_frames(images)
            if variant.context_once:
                denoise = model.make_denoiser(conditions)
            else:

                def denoise(latents: torch.Tensor, t: torch.Tensor, c: object = conditions) -> torch.Tensor:
                    return model.predict_noise(latents, t, c)  # type: ignore[arg-type]

            latents = sample_ddim(
                denoise,
                randn(tuple(known.shape), generator, device, known.dtype),
                alphas_cumprod=model.alphas_cumprod,
                num_steps=steps,
                mouth_mask=mask,
                known_latents=known,
                generator=generator,
            )
            model.decode_latents(latents)
            del start


def measure(preset: str, config: DiffTalkConfig, device: torch.device, variant: Variant, steps: int,
            frames: int) -> Measurement:  # fmt: skip
    notes = []
    if variant.bf16 and device.type == "cpu":
        notes.append("bf16 autocast on CPU")
    if variant.compile and device.type != "cuda":
        if variant.name == "torch.compile":
            return Measurement(preset, variant.name, steps, float("nan"), float("nan"), None, ["GPU only"])
        variant = Variant(**{**variant.__dict__, "compile": False})
        notes.append("without torch.compile on CPU")
    model = build(config, device, variant)
    run_frames(model, device, variant, steps=min(steps, 2), frames=variant.batch)  # warm-up (and compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    run_frames(model, device, variant, steps, frames)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Measurement(preset, variant.name, steps, 1000 * seconds / frames, frames / seconds, peak, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke run)")
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 50, 20, 10])
    parser.add_argument("--frames", type=int, default=32, help="frames per measurement")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.tiny:
        presets = {"tiny": load_config("tiny")}
    else:
        presets = {"256² (paper_256, f=4)": load_config("paper_256"), "512² (paper_512, f=8)": load_config("paper_512")}
    rows: list[Measurement] = []
    for name, config in presets.items():
        for steps in args.steps:
            for variant in VARIANTS:
                frames = max(args.frames, variant.batch)
                rows.append(measure(name, config, device, variant, steps, frames))
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [
        f"# Generation speed on {label}",
        "",
        "`python -m benchmarks.bench_generate "
        + ("--device cpu --tiny" if args.tiny else f"--device {args.device}")
        + "` — one output frame = image-condition encoding + DDIM + decoding.",
        "",
        "| model | DDIM steps | variant | ms / frame | frames / s | × baseline | peak memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r.preset == row.preset and r.steps == row.steps and r.variant == "baseline")
        ratio = row.frames_per_second / base.frames_per_second if base.frames_per_second else float("nan")
        memory = f"{row.peak_memory_mb:.0f} MiB" if row.peak_memory_mb is not None else "n/a"
        note = f" ({'; '.join(row.notes)})" if row.notes else ""
        lines.append(
            f"| {row.preset} | {row.steps} | {row.variant}{note} | {row.ms_per_frame:.1f} | "
            f"{row.frames_per_second:.2f} | {ratio:.2f} | {memory} |"
        )
    name = f"generate_{device.type}" + ("_tiny" if args.tiny else "")
    data = {"device": label, "rows": [row.__dict__ for row in rows]}
    write_results(name, data, "\n".join(lines), out_dir=args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
