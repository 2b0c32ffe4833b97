"""Generation speed through the real pipeline, side by side: samplers, step counts, students, GPU switches.

Every row is one ``DiffTalkPipeline.generate`` call (audio features, masked sampling, decoding,
colour fix, paste-back, watermark and H.264/AAC encoding all included) on the demo's never-seen
synthetic identity with new speech, after one short warm-up call (the model loaded and the
reference analysed once per model, as in a session). Per row: time to the first written frame,
end-to-end frames/s, steady frames/s (after the first frame), peak memory (host RSS on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU). With ``--quality`` the same runs are also scored on the
held-out identities (``benchmarks.bench_steps_quality``) and the quality columns join the table.

A run is ``SAMPLER:STEPS[:CHECKPOINT]`` (``ddim:25``, ``dpmpp:8``, ``lcm:2:runs/distill/checkpoints/model``),
optionally followed by ``@OPTION=VALUE,...`` of ``GenerateOptions`` (``lcm:1:S@decode_window=false``); GPU
switches (``--dtype``, ``--channels-last``, ``--compile``, ``--lanes``) apply to every row.
``--preset paper_256`` times a random-weight model of that config instead of a checkpoint (speed does
not depend on the weights' values). Writes benchmarks/results/generate_<device>[_<name>].{json,md}.

    python -m benchmarks.bench_generate --runs ddim:25 dpmpp:10 unipc:10              # the demo model, CPU
    python -m benchmarks.bench_generate --runs ddim:25 ddim:10 --quality --data data/synth128 \\
        --syncnet src/difftalk/assets/demo_syncnet
    python -m benchmarks.bench_generate --device cuda --preset paper_256 --dtype bf16 --lanes 16 --compile
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_steps_quality import QUALITY_COLUMNS, RunSpec, markdown_table, parse_run, quality_rows
from benchmarks.bench_train_memory import MemorySampler
from benchmarks.common import write_results
from difftalk.config import load_config
from difftalk.demo import DEMO_MODEL, render_synthetic_inputs
from difftalk.models.difftalk import DiffTalkModel
from difftalk.pipeline import DiffTalkPipeline, GenerateOptions
from difftalk.pipeline.generate import SourceCache

logger = logging.getLogger("bench_generate")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class SpeedRow:
    """What one timed ``generate`` call measured."""

    run: str
    frames: int
    first_frame_seconds: float
    seconds: float
    frames_per_second: float
    steady_frames_per_second: float
    peak_memory_mb: float
    prepared_first_frame_seconds: float
    prepared_frames_per_second: float


def random_checkpoint(preset: str, directory: Path) -> Path:
    """A checkpoint folder of ``preset``'s model with random weights (speed only)."""
    config = load_config(preset)
    torch.manual_seed(0)
    DiffTalkModel(config.model).save_pretrained(directory, sampler_steps=config.sampler.num_steps)
    return directory


def time_run(pipe: DiffTalkPipeline, spec: RunSpec, audio: Path, out: Path, options: GenerateOptions) -> SpeedRow:
    """One warm-up call on the first 0.2 s, then the timed call on the whole ``audio`` with nothing of the
    source encoded yet (a first dubbing), then the same call again: every source crop is then encoded
    already (``SourceCache``: a prepared avatar, a looped video, a photo)."""
    import numpy as np

    from difftalk.io.audio import SAMPLE_RATE, load_audio

    samples = load_audio(audio)
    run_options = GenerateOptions(
        **{**asdict(options), **dict(spec.options), "num_steps": spec.steps, "sampler": spec.sampler}
    )
    pipe.generate(samples[: SAMPLE_RATE // 5].astype(np.float32), out / "warmup.mp4", run_options)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(pipe.device)
        torch.cuda.reset_peak_memory_stats(pipe.device)
    pipe.source_cache = SourceCache()  # the warm-up's frames are not the timed call's head start
    sampler = MemorySampler(interval=0.05)
    sampler.start()
    result = pipe.generate(audio, out / f"{spec.folder_name}.mp4", run_options)
    sampler.stop()
    prepared = pipe.generate(audio, out / f"{spec.folder_name}_prepared.mp4", run_options)
    peak = torch.cuda.max_memory_allocated(pipe.device) / 2**20 if cuda else max(m for _, m in sampler.samples)
    steady = (result.num_frames - 1) / max(result.seconds - result.first_frame_seconds, 1e-9)
    return SpeedRow(spec.label, result.num_frames, result.first_frame_seconds, result.seconds,
                    result.frames_per_second, steady, peak, prepared.first_frame_seconds,
                    prepared.frames_per_second)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["ddim:25", "ddim:10"], help="SAMPLER:STEPS[:CHECKPOINT] ...")
    parser.add_argument("--checkpoint", default=str(DEMO_MODEL), help="the model of runs that name none")
    parser.add_argument("--preset", help="time a random-weight model of this config instead (e.g. paper_256, tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPUs)")
    parser.add_argument("--lanes", type=int, default=8, help="frames sampled as one batch (the demo uses 8)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the driving speech")
    parser.add_argument("--quality", action="store_true", help="also score the runs on held-out identities")
    parser.add_argument("--data", help="prepared dataset for --quality (e.g. data/synth128)")
    parser.add_argument("--syncnet", help="held-out sync expert for --quality")
    parser.add_argument("--quality-root", type=Path, default=Path("runs/steps_quality"))
    parser.add_argument("--name", default="", help="suffix of the results file name")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.quality and not args.data:
        parser.error("--quality needs --data (a prepared dataset with held-out clips)")
    device = torch.device(args.device)
    options = GenerateOptions(lanes=args.lanes, progressive_reference=False, noise="shared", progress=False)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        default = str(random_checkpoint(args.preset, work / "model")) if args.preset else args.checkpoint
        specs = [parse_run(text, default) for text in args.runs]
        inputs = render_synthetic_inputs(work / "inputs", seconds=args.seconds)
        pipes: dict[str, DiffTalkPipeline] = {}
        for spec in specs:
            if spec.checkpoint not in pipes:
                pipe = DiffTalkPipeline.from_pretrained(spec.checkpoint, device=device, dtype=DTYPES[args.dtype])
                pipe.optimize(channels_last=args.channels_last, compile_unet=args.compile)
                pipe.set_source(inputs.source, options)
                pipes[spec.checkpoint] = pipe
            timed = time_run(pipes[spec.checkpoint], spec, inputs.speech, work, options)
            logger.info(
                "%s: first frame %.2f s, %.2f frames/s", timed.run, timed.first_frame_seconds, timed.frames_per_second
            )
            rows.append(asdict(timed))
    if args.quality:
        quality = quality_rows(specs, args.data, args.quality_root, args.syncnet, device=args.device)
        for row, extra in zip(rows, quality, strict=True):
            row.update({k: v for k, v in extra.items() if k not in row})
    teacher = rows[0]["frames_per_second"]
    for row in rows:
        row["speedup"] = row["frames_per_second"] / teacher if teacher else math.nan
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    model = f"random-weight {args.preset}" if args.preset else args.checkpoint
    speed_columns = [
        ("first_frame_seconds", "first frame s ↓"),
        ("frames_per_second", "frames/s ↑"),
        ("steady_frames_per_second", "steady frames/s ↑"),
        ("speedup", "× first run"),
        ("peak_memory_mb", "peak MiB"),
        ("prepared_first_frame_seconds", "first frame s, prepared source ↓"),
        ("prepared_frames_per_second", "frames/s, prepared source ↑"),
    ]
    columns = speed_columns + (QUALITY_COLUMNS if args.quality else [])
    lines = [
        f"# Generation through the pipeline on {label}",
        "",
        f"Model {model}; {args.dtype}, lanes {args.lanes}"
        + (", channels-last" if args.channels_last else "")
        + (", torch.compile" if args.compile else "")
        + f"; {rows[0]['frames']} frames ({args.seconds:g} s) of the demo's never-seen identity; end to end"
        ' (features, sampling, decoding, paste-back, watermark, H.264/AAC); "prepared source": the same call'
        " again, the source's crops already encoded (a live avatar, a looped video, a photo).",
        "",
        markdown_table(rows, [("run", "run")], columns),
    ]
    name = f"generate_{device.type}" + (f"_{args.name}" if args.name else "")
    write_results(name, {"device": label, "model": model, "rows": rows}, "\n".join(lines), out_dir=args.out)
    logger.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
