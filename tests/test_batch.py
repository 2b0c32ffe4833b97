"""Batch generation: job lists are checked before any work, the model and each reference's analysis load once,
a failing job is reported while the others go on, and an interrupted batch resumes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from difftalk.cli import main
from difftalk.config import load_config
from difftalk.io.audio import save_wav
from difftalk.io.video import probe_video
from difftalk.models.difftalk import DiffTalkModel
from difftalk.pipeline.batch import Job, jobs_for_audios, load_jobs
from tests.helpers import needs_dlib


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "clips").mkdir()
    cv2.imwrite(str(tmp_path / "clips" / "anna.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    t = np.arange(12000) / 16000
    for name, freq in (("hello", 220), ("bye", 330)):
        save_wav(tmp_path / f"{name}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    (tmp_path / "broken.wav").write_text("not audio at all")
    return tmp_path


def test_a_csv_job_list_resolves_paths_against_its_folder_and_parses_options(inputs):
    (inputs / "jobs.csv").write_text(
        "source,audio,output,steps,noise,progressive_reference\n"
        "clips/anna.png,hello.wav,out/a.mp4,12,shared,false\n"
        "clips/anna.png, bye.wav ,,,,\n"
    )
    jobs = load_jobs(inputs / "jobs.csv", default_output=inputs / "default/")
    assert [j.source for j in jobs] == [inputs / "clips" / "anna.png"] * 2
    assert jobs[0].output == inputs / "out" / "a.mp4"
    assert jobs[0].options == {"num_steps": 12, "noise": "shared", "progressive_reference": False}
    assert jobs[1].output == inputs / "default" / "anna_bye.mp4" and jobs[1].options == {}
    assert jobs[0].name == "jobs.csv line 2"


def test_a_yaml_job_list_takes_defaults_and_an_output_folder(inputs):
    # 'reference' is the source's name in earlier versions: still read
    (inputs / "jobs.yaml").write_text(
        "defaults: {steps: 8, seed: 3}\n"
        "jobs:\n"
        "  - {reference: clips/anna.png, audio: hello.wav, output: videos/}\n"
        "  - {reference: clips/anna.png, audio: bye.wav, output: videos/, seed: 4}\n"
    )
    jobs = load_jobs(inputs / "jobs.yaml")
    assert [j.output for j in jobs] == [inputs / "videos" / "anna_hello.mp4", inputs / "videos" / "anna_bye.mp4"]
    assert [dict(j.options) for j in jobs] == [{"num_steps": 8, "seed": 3}, {"num_steps": 8, "seed": 4}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source,audio,output,stpes\nclips/anna.png,hello.wav,a.mp4,3\n", "unknown job option 'stpes'"),
        ("source,audio,output,noise\nclips/anna.png,hello.wav,a.mp4,loud\n", "line 2: noise: must be one of"),
        ("source,audio,output,steps\nclips/anna.png,hello.wav,a.mp4,0\n", "num_steps must be >= 1"),
        ("source,audio,output,watermark\nclips/anna.png,hello.wav,a.mp4,false\n", "unknown job option"),
        ("source,audio,output\nclips/anna.png,hello.wav,\n", "line 2: no output given"),
        ("source,audio\nclips/anna.png,hello.wav\nclips/anna.png,hello.wav\n", "both write"),
        ("source,audio,output\nclips/bob.png,hello.wav,a.mp4\n", "line 2: source"),
        ("source,output\nclips/anna.png,a.mp4\n", "needs a header row"),
        ("source,reference,audio,output\nclips/anna.png,clips/anna.png,hello.wav,a.mp4\n", "not both"),
        ("source,audio,output\n", "the job list is empty"),
    ],
)
def test_a_bad_job_list_is_refused_before_any_work_with_the_row_named(inputs, text, message):
    (inputs / "jobs.csv").write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_jobs(inputs / "jobs.csv", default_output=inputs / "out/" if "both write" in message else None)


def test_several_audio_files_need_an_output_folder(inputs):
    audios = [inputs / "hello.wav", inputs / "bye.wav"]
    with pytest.raises(ValueError, match="need an output folder"):
        jobs_for_audios(inputs / "clips" / "anna.png", audios, inputs / "out.mp4")
    jobs = jobs_for_audios(inputs / "clips" / "anna.png", audios, str(inputs / "out") + "/")
    assert [j.output.name for j in jobs] == ["anna_hello.mp4", "anna_bye.mp4"]
    assert isinstance(jobs[0], Job)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("batch_ckpt") / "model"
    DiffTalkModel(load_config("tiny").model).save_pretrained(path, feature_backend="mel", sampler_steps=2)
    return path


@needs_dlib  # the photo's landmarks
@pytest.mark.slow
def test_a_batch_loads_once_reports_a_failing_job_and_resumes(inputs, tiny_checkpoint, monkeypatch, capsys):
    import difftalk.pipeline.base
    import difftalk.pipeline.generate

    loads, analyses = [], []
    real_load, real_analyze = (
        difftalk.pipeline.generate.DiffTalkModel.from_pretrained,
        difftalk.pipeline.base.analyze_source,
    )
    monkeypatch.setattr(
        difftalk.pipeline.generate.DiffTalkModel,
        "from_pretrained",
        lambda *a, **k: loads.append(1) or real_load(*a, **k),
    )
    monkeypatch.setattr(
        difftalk.pipeline.base, "analyze_source", lambda *a, **k: analyses.append(a[0]) or real_analyze(*a, **k)
    )
    (inputs / "jobs.csv").write_text(
        "reference,audio,output,seed\n"
        "clips/anna.png,hello.wav,out/one.mp4,1\n"
        "clips/anna.png,broken.wav,out/two.mp4,\n"
        "clips/anna.png,bye.wav,out/three.mp4,2\n"
    )
    args = ["generate", "--jobs", str(inputs / "jobs.csv"), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    args += ["--no-progress", "--summary", str(inputs / "summary.json")]
    assert main(args) == 1  # one job failed
    assert len(loads) == 1 and len(analyses) == 1
    out = capsys.readouterr().out
    assert "2 done, 1 failed, 0 skipped" in out and "broken.wav" not in out.split("|")[0]
    summary = json.loads((inputs / "summary.json").read_text())
    assert [s["status"] for s in summary] == ["done", "failed", "done"]
    assert "broken.wav" in summary[1]["error"] and summary[0]["frames"] == 19
    for name in ("one", "three"):
        info = probe_video(inputs / "out" / f"{name}.mp4")
        assert info.num_frames == 19 and info.has_audio
    assert not (inputs / "out" / "two.mp4").exists()
    assert not list((inputs / "out").glob("*.tmp*"))

    # resuming: finished jobs are skipped, the broken one is tried (and reported) again
    assert main([*args, "--skip-existing"]) == 1
    assert "0 done, 1 failed, 2 skipped" in capsys.readouterr().out

    # several --audio for one reference: one model, one analysis, one video per audio
    loads.clear(), analyses.clear()
    many = ["generate", "--source", str(inputs / "clips" / "anna.png"), "--audio", str(inputs / "hello.wav")]
    many += ["--audio", str(inputs / "bye.wav"), "-o", str(inputs / "many") + "/", "--checkpoint", str(tiny_checkpoint)]
    assert main([*many, "--device", "cpu", "--no-progress"]) == 0
    assert len(loads) == 1 and len(analyses) == 1
    assert sorted(p.name for p in (inputs / "many").glob("*.mp4")) == ["anna_bye.mp4", "anna_hello.mp4"]
