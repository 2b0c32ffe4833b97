"""The benchmark scripts run end to end in tiny settings (so they cannot rot) and write their results."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import needs_dlib


def _run(module, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()


def test_bench_generate_times_the_real_pipeline_per_sampler(tmp_path, monkeypatch):
    from benchmarks import bench_generate

    argv = ["--device", "cpu", "--preset", "tiny", "--runs", "ddim:2", "dpmpp:2", "--seconds", "0.4"]
    _run(bench_generate, [*argv, "--lanes", "1", "--out", str(tmp_path)], monkeypatch)
    data = json.loads((tmp_path / "generate_cpu.json").read_text())
    rows = {row["run"]: row for row in data["rows"]}
    assert set(rows) == {"ddim:2:model", "dpmpp:2:model"}
    for row in rows.values():
        assert row["frames"] == 10 and 0 < row["first_frame_seconds"] < row["seconds"]
        assert row["frames_per_second"] > 0 and row["peak_memory_mb"] > 100
    assert rows["ddim:2:model"]["speedup"] == 1.0
    assert "| ddim:2:model |" in (tmp_path / "generate_cpu.md").read_text()


def test_bench_train_memory_smoke(prepared_dataset, tmp_path, monkeypatch):
    from benchmarks import bench_train_memory

    argv = [
        "--data",
        str(prepared_dataset),
        "--epochs",
        "0.5",
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--out",
        str(tmp_path),
    ]
    _run(bench_train_memory, argv, monkeypatch)
    data = json.loads((tmp_path / "train_memory.json").read_text())
    assert data["steps"] >= 1 and data["rss_mb_end"] > 0 and len(data["samples"]) >= 2


@needs_dlib
@pytest.mark.slow
def test_bench_preprocess_smoke(tmp_path, monkeypatch):
    from benchmarks import bench_preprocess

    _run(bench_preprocess, ["--seconds", "0.8", "--out", str(tmp_path)], monkeypatch)
    rows = json.loads((tmp_path / "preprocess.json").read_text())["rows"]
    assert [r["videos"] for r in rows] == [1, 2] and all(r["faces_found"] == 20 * r["videos"] for r in rows)


def test_bench_train_step_smoke(prepared_dataset, tmp_path, monkeypatch):
    from benchmarks import bench_train_step

    argv = ["--data", str(prepared_dataset), "--config", "tiny", "--steps", "4", "--out", str(tmp_path)]
    _run(bench_train_step, argv, monkeypatch)
    rates = json.loads((tmp_path / "train_step_cpu.json").read_text())["samples_per_second"]
    assert len(rates) == 2 and all(rate > 0 for rate in rates.values())


@needs_dlib
@pytest.mark.slow
def test_bench_generate_memory_smoke(tmp_path, monkeypatch):
    from benchmarks import bench_generate_memory

    _run(bench_generate_memory, ["--minutes", "0.05", "--out", str(tmp_path)], monkeypatch)
    data = json.loads((tmp_path / "generate_memory.json").read_text())
    assert data["frames"] == 75 and data["rss_mb_end"] > 0
    _run(bench_generate_memory, ["--minutes", "0.05", "--stream", "--out", str(tmp_path)], monkeypatch)
    streamed = json.loads((tmp_path / "generate_memory_stream.json").read_text())
    assert streamed["frames"] == 75 and "--stream" in (tmp_path / "generate_memory_stream.md").read_text()


@pytest.mark.slow
def test_paper_tables_tiny_trains_scores_and_reuses_runs(tmp_path, tmp_path_factory, monkeypatch):
    """One table end to end at toy scale: two trained variants, self- and cross-driven, scored and cached."""
    from benchmarks import paper_tables

    from difftalk.eval.benchmark import run_benchmark
    from tests.test_syncnet import synthetic_sync_setup

    setup = synthetic_sync_setup(tmp_path_factory)  # shared with the sync-expert and evaluation tests
    root, out = tmp_path / "root", tmp_path / "out"
    tiny = ["--config", "tiny", "--set", "train.autoencoder=''", "--set", "model.unet.block_out_channels=[32, 64]"]
    tiny += ["--set", "model.unet.attention_levels=[false, true]", "--set", "train.batch_size=2"]
    argv = ["--table", "context", "--data", str(setup.data_dir), "--syncnet", str(setup.expert_dir), *tiny]
    argv += ["--seconds", "0.4", "--ddim-steps", "2", "--lanes", "1", "--root", str(root), "--out", str(out)]
    argv += ["--split", "train", "--max-clips", "2"]  # cross-driven needs two clips; the setup holds out one
    _run(paper_tables, [*argv, "--steps", "2"], monkeypatch)

    table = json.loads((out / "paper_context.json").read_text())
    assert [row["variant"] for row in table["rows"]] == ["full", "multi_token"]
    for row in table["rows"]:
        assert row["self"]["num_clips"] == row["cross"]["num_clips"] == 2 and math.isfinite(row["self"]["psnr"])
        assert math.isfinite(row["self"]["lse_c"]) and math.isfinite(row["cross"]["lse_c"])
    markdown = (out / "paper_context.md").read_text()
    assert "| multi-token context |" in markdown and "(2 steps each)" in markdown
    assert "— 2 train clips, 0.4 s per clip" in markdown
    runs = sorted(p.name for p in (root / "runs").iterdir())
    assert len(runs) == 2 and all(name.startswith(("full_cfg-", "multi_token_cfg-")) for name in runs)

    # the same command again reuses the trained models and the scored results
    def fail(*args, **kwargs):
        raise AssertionError("a finished run or result was not reused")

    monkeypatch.setattr(paper_tables, "train_diffusion", fail)
    monkeypatch.setattr(paper_tables, "run_benchmark", fail)
    _run(paper_tables, [*argv, "--steps", "2"], monkeypatch)
    assert json.loads((out / "paper_context.json").read_text()) == table
    with pytest.raises(ValueError, match="at least two clips"):
        run_benchmark(setup.data_dir, tmp_path / "one", method="source", cross_audio=True, max_clips=1)


@pytest.mark.slow
def test_documented_benchmark_commands_run_from_the_repository_root():
    """``python benchmarks/x.py`` cannot import ``benchmarks.common``; the docs must say ``python -m benchmarks.x``."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    documents = [root / "README.md", *(root / "docs").glob("*.md"), *(root / "benchmarks").rglob("*.py")]
    documents += list((root / "benchmarks" / "results").glob("*.md"))
    broken = [
        f"{path.name}: {m.group(0)}"
        for path in documents
        for m in re.finditer(r"python3? benchmarks/\w+", path.read_text())
    ]
    assert not broken, f"use `python -m benchmarks.<name>`: {broken}"
    documented = set(re.findall(r"python -m benchmarks\.(\w+)", (root / "docs" / "results.md").read_text()))
    assert "paper_tables" in documented and all((root / "benchmarks" / f"{name}.py").is_file() for name in documented)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.paper_tables", "--help"],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--table" in done.stdout, done.stderr


def test_memory_samples_are_thinned_evenly_with_both_ends():
    import itertools

    from benchmarks.bench_train_memory import thin

    samples = [(float(i), float(i * i)) for i in range(1001)]
    kept = thin(samples, 200)
    assert len(kept) == 200 and kept[0] == samples[0] and kept[-1] == samples[-1]
    gaps = {b[0] - a[0] for a, b in itertools.pairwise(kept)}
    assert gaps <= {5.0, 6.0}  # evenly spaced
    assert thin(samples[:3], 200) == samples[:3]


@pytest.mark.slow
def test_paper_tables_baselines_train_the_gan_on_the_recipes_frames_and_rate(tmp_path, tmp_path_factory, monkeypatch):
    """Table 3's GAN row: trained on the same data with the diffusion recipe's frames per step and rate, and
    with ``--lipgan-syncnet`` against another expert than the one that scores it (its own run folder)."""
    import shutil

    import yaml
    from benchmarks import paper_tables

    from tests.test_syncnet import synthetic_sync_setup

    setup = synthetic_sync_setup(tmp_path_factory)
    root, out = tmp_path / "root", tmp_path / "out"
    loss_expert = shutil.copytree(setup.expert_dir, tmp_path / "loss_expert")
    argv = ["--table", "baselines", "--skip", "full", "--data", str(setup.data_dir), "--syncnet", str(setup.expert_dir)]
    argv += ["--lipgan-syncnet", str(loss_expert)]
    argv += ["--config", "tiny", "--set", "train.autoencoder=''", "--set", "train.batch_size=10", "--steps", "2"]
    argv += ["--seconds", "0.4", "--ddim-steps", "2", "--lanes", "1", "--root", str(root), "--out", str(out)]
    argv += ["--split", "train", "--max-clips", "2"]
    _run(paper_tables, argv, monkeypatch)

    table = json.loads((out / "paper_baselines.json").read_text())
    assert [row["variant"] for row in table["rows"]] == ["source", "static", "lipgan"]
    gan = table["rows"][-1]
    assert gan["self"]["num_clips"] == gan["cross"]["num_clips"] == 2
    assert math.isfinite(gan["self"]["psnr_mouth"]) and math.isfinite(gan["cross"]["lse_c"])
    (run,) = (root / "runs").iterdir()  # another loss expert and a changed recipe get their own GAN run
    assert paper_tables.lipgan_name(None) == "lipgan"
    assert run.name.startswith(paper_tables.lipgan_name(loss_expert) + "_cfg-")
    trained = yaml.safe_load((run / "config.yaml").read_text())
    assert trained["syncnet"] == str(loss_expert)
    assert trained["batch_size"] == 2 and trained["learning_rate"] == paper_tables.ABLATION_SCALE["train.learning_rate"]
    assert trained["model"]["image_size"] == 64 and trained["steps"] == 2


def test_steps_quality_runs_take_generation_options():
    """``SAMPLER:STEPS[:CHECKPOINT][@OPTION=VALUE,...]``: the options reach the run's name and folder; typos fail."""
    import argparse

    from benchmarks.bench_steps_quality import parse_run

    plain, held = parse_run("ddim:5", "ckpt/model"), parse_run("ddim:5:other/model@silence_hold=4", "ckpt/model")
    assert plain.options == () and plain.checkpoint == "ckpt/model"
    assert held.options == (("silence_hold", 4),) and held.checkpoint == "other/model"
    assert held.label == "ddim:5:model@silence_hold=4" and held.folder_name != plain.folder_name
    run = parse_run("ddim:5:runs/ft_s0/checkpoints/model@audio_guidance=2", "ckpt/model")
    assert run.label == "ddim:5:ft_s0@audio_guidance=2" and run.options == (("audio_guidance", 2),)
    with pytest.raises(argparse.ArgumentTypeError, match="silence_hld"):
        parse_run("ddim:5@silence_hld=4", "ckpt/model")


def test_steps_quality_rescores_a_checkpoint_path_that_got_new_weights(tmp_path, monkeypatch):
    """Scored folders are named by the checkpoint's path: they are reused only while the weights there are the
    ones they were generated with (a shipped model replaced in place must not inherit the old model's scores)."""
    from benchmarks import bench_steps_quality

    generated: list[Path] = []

    def fake_benchmark(data, folder, **_):
        folder.mkdir(parents=True, exist_ok=True)
        generated.append(folder)

    def fake_evaluate(folder, *_, **__):
        (folder / "metrics.json").write_text("{}")

    monkeypatch.setattr(bench_steps_quality, "run_benchmark", fake_benchmark)
    monkeypatch.setattr(bench_steps_quality, "evaluate_results", fake_evaluate)
    checkpoint = tmp_path / "demo_model"
    checkpoint.mkdir()
    (checkpoint / "weights.safetensors").write_bytes(b"old weights")
    spec = bench_steps_quality.parse_run(f"ddim:5:{checkpoint}", "unused")

    def score() -> dict[str, Path]:
        return bench_steps_quality.score_run(spec, "data", tmp_path / "runs", None, 1.0, None, "cpu")

    folders = score()
    assert sorted(generated) == sorted(folders.values()) and len(generated) == 2
    score()
    assert len(generated) == 2  # same weights: reused
    (checkpoint / "weights.safetensors").write_bytes(b"new weights")
    score()
    assert len(generated) == 4  # new weights at the same path: generated and scored again
    (folders["self"] / bench_steps_quality.WEIGHTS_MARKER).unlink()  # a folder from before the marker
    score()
    assert len(generated) == 5 and generated[-1] == folders["self"]


def test_bench_generate_runs_take_generation_options(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from benchmarks import bench_generate
    from benchmarks.bench_steps_quality import parse_run

    from difftalk.io.audio import save_wav

    seen = []

    class Pipe:
        device = torch.device("cpu")
        source_cache = None

        def generate(self, audio, out, options):
            seen.append(options)
            return SimpleNamespace(num_frames=5, first_frame_seconds=0.1, seconds=1.0, frames_per_second=5.0)

    save_wav(tmp_path / "a.wav", np.zeros(16000, np.float32))
    spec = parse_run("lcm:1:S@decode_window=false", "model")
    base = bench_generate.GenerateOptions(lanes=4, progress=False)
    bench_generate.time_run(Pipe(), spec, tmp_path / "a.wav", tmp_path, base)
    assert len(seen) == 3 and all(o.decode_window is False and o.num_steps == 1 and o.lanes == 4 for o in seen)
