"""The benchmark scripts run end to end in tiny settings (so they cannot rot) and write their results."""

from __future__ import annotations

import json
import math
import sys

from tests.test_preprocess import needs_dlib


def _run(module, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()


def test_bench_generate_cpu_tiny(tmp_path, monkeypatch):
    from benchmarks import bench_generate

    _run(
        bench_generate,
        ["--device", "cpu", "--tiny", "--steps", "2", "--frames", "2", "--out", str(tmp_path)],
        monkeypatch,
    )
    data = json.loads((tmp_path / "generate_cpu_tiny.json").read_text())
    rows = {row["variant"]: row for row in data["rows"]}
    assert {"baseline", "context once", "bf16", "ours (all)"} <= set(rows)
    assert rows["baseline"]["frames_per_second"] > 0 and math.isnan(rows["torch.compile"]["frames_per_second"])
    assert "| tiny | 2 | baseline |" in (tmp_path / "generate_cpu_tiny.md").read_text()


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
def test_bench_generate_memory_smoke(tmp_path, monkeypatch):
    from benchmarks import bench_generate_memory

    _run(bench_generate_memory, ["--minutes", "0.05", "--out", str(tmp_path)], monkeypatch)
    data = json.loads((tmp_path / "generate_memory.json").read_text())
    assert data["frames"] == 75 and data["rss_mb_end"] > 0
