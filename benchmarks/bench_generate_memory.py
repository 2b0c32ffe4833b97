"""Host memory of generation over a long input: it must not grow with the input's length.

Dubs a short real-face reference video (looped forwards and backwards) with ``--minutes`` of speech
using a tiny random-weight model at 1 DDIM step (memory, not quality, is measured), while a thread
samples the process's RSS. Writes benchmarks/results/generate_memory.{json,md,png}.

    python -m benchmarks.bench_generate_memory [--minutes 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_train_memory import MemorySampler
from benchmarks.common import RESULTS, write_results
from difftalk.config import load_config, replace
from difftalk.io.audio import save_wav
from difftalk.models.difftalk import DiffTalkModel
from difftalk.pipeline import DiffTalkPipeline, GenerateOptions
from difftalk.synth import sample_articulation, synthesize_speech
from difftalk.synth.generate import identity_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--stream", action="store_true", help="stream the speech in 0.2 s chunks (difftalk stream)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    from tests.fakes import astronaut_video  # the real-face reference used by the tests

    frames = int(args.minutes * 60 * 25)
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        astronaut_video(work / "face.mp4", fps=25, seconds=4.0)
        identity = identity_for(7, 0)
        rng = np.random.default_rng(0)
        speech = synthesize_speech(sample_articulation(rng, frames, identity.speaking_rate), identity, rng)
        save_wav(work / "speech.wav", speech)
        torch.manual_seed(0)
        model = DiffTalkModel(replace(load_config("tiny").model, {"unet.zero_init": False}))
        pipe = DiffTalkPipeline(model, "mel", default_steps=1)
        options = GenerateOptions(num_steps=1, progress=False)
        pipe.set_source(work / "face.mp4", options)
        sampler = MemorySampler(interval=1.0)
        sampler.start()
        start = time.perf_counter()
        if args.stream:
            block = 3200  # 0.2 s at 16 kHz
            chunks = (speech[i : i + block] for i in range(0, len(speech), block))
            result = pipe.stream_to_file(chunks, work / "out.mp4", options)
        else:
            result = pipe.generate(work / "speech.wav", work / "out.mp4", options)
        wall = time.perf_counter() - start
        sampler.stop()
    name = "generate_memory_stream" if args.stream else "generate_memory"
    t = np.array([s[0] for s in sampler.samples])
    mb = np.array([s[1] for s in sampler.samples])
    first, second = mb[(t > 0.1 * t[-1]) & (t <= 0.5 * t[-1])], mb[t > 0.5 * t[-1]]
    data = {
        "minutes": args.minutes,
        "frames": result.num_frames,
        "wall_seconds": round(wall, 1),
        "rss_mb_first_half_max": round(float(first.max()), 1) if first.size else None,
        "rss_mb_second_half_max": round(float(second.max()), 1) if second.size else None,
        "rss_mb_end": round(float(mb[-1]), 1),
        "samples": [[round(a, 1), round(b, 1)] for a, b in sampler.samples],
    }
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 3))
        axis.plot(t, mb)
        axis.set_xlabel("seconds")
        axis.set_ylabel("RSS (MiB)")
        mode = "streaming" if args.stream else "generating"
        axis.set_title(f"{mode} {args.minutes:g} min ({result.num_frames} frames)")
        figure.tight_layout()
        (args.out or RESULTS).mkdir(parents=True, exist_ok=True)
        figure.savefig((args.out or RESULTS) / f"{name}.png", dpi=100)
    except ImportError:
        pass
    markdown = "\n".join(
        [
            "# Host memory while " + ("streaming" if args.stream else "generating") + " a long video",
            "",
            f"`python -m benchmarks.bench_generate_memory --minutes {args.minutes:g}"
            + (" --stream" if args.stream else "")
            + f"` — {result.num_frames} frames, "
            "tiny random model at 1 DDIM step, a 4 s reference looped.",
            "",
            "| max RSS, 10–50 % of the run | max RSS, 50–100 % | at the end | wall time |",
            "|---|---|---|---|",
            f"| {data['rss_mb_first_half_max']} MiB | {data['rss_mb_second_half_max']} MiB | {data['rss_mb_end']} MiB "
            f"| {data['wall_seconds']} s |",
        ]
    )
    write_results(name, data, markdown, out_dir=args.out)
    print(markdown)


if __name__ == "__main__":
    main()
