"""The command line: every sub-command has help, bad input gives a message (exit 2), no traceback."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from difftalk.cli import build_parser, main

COMMANDS = [
    "demo", "info", "convert-ldm-vq", "synth", "preprocess", "train", "train-autoencoder",
    "generate", "verify", "benchmark", "hdtf-clips", "evaluate", "train-syncnet", "train-lipgan", "app",
]  # fmt: skip


def test_help_lists_the_sub_commands():
    result = subprocess.run(
        [sys.executable, "-m", "difftalk.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_sub_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_info_counts_parameters_without_allocating(capsys):
    assert main(["info", "--config", "paper_256"]) == 0
    assert "530,152,963" in capsys.readouterr().out


def test_bad_config_is_a_message_not_a_traceback(caplog, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  unet:\n    heads: 3\n")
    assert main(["info", "--config", str(bad)]) == 2
    assert "model.unet.heads" in caplog.text
    assert main(["convert-ldm-vq", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "out")]) == 2
    assert "does not exist" in caplog.text


@pytest.mark.slow
def test_demo_runs_end_to_end_quickly(tmp_path):
    from difftalk.demo_toy import run_demo

    result = run_demo(out_dir=tmp_path, steps=3, progress=False)
    assert result.grid_path.is_file() and result.grid_path.stat().st_size > 0
    assert math.isfinite(result.final_loss)


# --- issue 13: user-facing defects of the command line ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny DiffTalk checkpoint whose recommended DDIM step count is 25."""
    import torch

    from difftalk.config import load_config
    from difftalk.models.difftalk import DiffTalkModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli_ckpt") / "model"
    DiffTalkModel(load_config("tiny").model).save_pretrained(path, feature_backend="mel", sampler_steps=25)
    return path


def test_info_writes_its_result_to_stdout_and_logging_to_stderr(capsys):
    assert main(["info", "--config", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert "tiny: 64² faces" in out and "parameters" in out
    assert "parameters" not in err


def test_version_flag_prints_the_package_version(capsys):
    from difftalk import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"difftalk {__version__}"


def _sub_parsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError("no sub-commands")


def test_every_argument_of_every_sub_command_has_help_and_defaults_are_shown():
    import argparse

    parser = build_parser()
    commands = _sub_parsers(parser)
    assert set(COMMANDS) <= set(commands)
    missing = [
        f"{name} {action.dest}"
        for name, sub in [("difftalk", parser), *commands.items()]
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert not missing, missing
    generate_help = commands["generate"].format_help()
    assert "(default: auto)" in generate_help and "(default: pingpong)" in generate_help
    assert "(default: None)" not in generate_help and "(default: False)" not in generate_help


def test_unusable_devices_are_one_clear_error_line(monkeypatch, caplog, capsys, tmp_path):
    import torch

    from difftalk.cli_options import DeviceError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    missing = str(tmp_path / "missing")
    for command in (
        ["generate", "--reference", missing, "--audio", missing, "--checkpoint", missing, "-o", missing],
        ["benchmark", missing, "--data", missing],
        ["evaluate", missing],
    ):
        for device, fix in (("cuda", "CUDA build of torch"), ("cuda:1", "CUDA build of torch"), ("mps", "Apple")):
            caplog.clear()
            assert main([*command, "--device", device]) == 2
            errors = [r for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1 and "\n" not in errors[0].getMessage(), caplog.text
            message = errors[0].getMessage()
            assert f"--device {device}" in message and fix in message and "--device cpu" in message
            assert "Traceback" not in caplog.text + capsys.readouterr().err
    assert resolve_device(None, default="auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="not a device name"):
        resolve_device("gpu0")


def test_dtype_auto_picks_bf16_only_where_the_hardware_computes_it(monkeypatch):
    """``--dtype auto``: bf16 on a CPU with the avx512_bf16/amx_bf16 flags, fp32 on one without (emulated
    bf16 is slower than fp32), bf16 or fp16 on CUDA by what the GPU supports; named dtypes are kept."""
    import torch

    from difftalk import cli_options
    from difftalk.cli_options import cpu_has_native_bf16, resolve_dtype

    sapphire = "processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    skylake = "processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw\n"
    assert cpu_has_native_bf16(sapphire) and not cpu_has_native_bf16(skylake) and not cpu_has_native_bf16("")
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(cli_options, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_dtype("auto", "cpu") == expected
        assert resolve_dtype("fp32", "cpu") == torch.float32 and resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("auto", "mps") == torch.float32
    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve_dtype("auto", "cuda:0") == expected
    with pytest.raises(ValueError, match="--dtype 'half'"):
        resolve_dtype("half", "cpu")


def _stub_generation(monkeypatch):
    from pathlib import Path

    from difftalk.pipeline import DiffTalkPipeline
    from difftalk.pipeline.base import GenerationResult

    monkeypatch.setattr(DiffTalkPipeline, "set_source", lambda self, source, options=None: None)
    monkeypatch.setattr(
        DiffTalkPipeline,
        "generate",
        lambda self, audio, output, options=None: GenerationResult(Path(output), 1, 0.04, 1, 0.1),
    )


def test_too_few_ddim_steps_are_rejected_or_warned_about(tiny_checkpoint, monkeypatch, caplog, capsys, tmp_path):
    _stub_generation(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for name in ("face.png", "a.wav"):  # generate checks its inputs exist before loading the model
        (tmp_path / name).touch()
    base = ["generate", "--source", "face.png", "--audio", "a.wav", "--checkpoint", str(tiny_checkpoint)]
    base += ["-o", str(tmp_path / "out.mp4"), "--device", "cpu"]
    for bad in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--steps", bad])
        assert exit_info.value.code == 2
        assert "--steps: must be an integer >= 1" in capsys.readouterr().err
    warnings = {}
    for steps in ("1", "2", "10", "25", "40"):
        caplog.clear()
        assert main([*base, "--steps", steps]) == 0
        warnings[steps] = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "noise" in warnings["1"] and "noise" in warnings["2"] and "--steps 25" in warnings["2"]
    assert "fewer than the 25" in warnings["10"] and "noise" not in warnings["10"]
    assert warnings["25"] == warnings["40"] == ""


def test_a_missing_face_extra_is_one_message_naming_the_pip_command(tiny_checkpoint, monkeypatch, caplog, tmp_path):
    import sys

    import cv2
    import numpy as np

    from difftalk.io.audio import save_wav

    cv2.imwrite(str(tmp_path / "face.png"), np.full((128, 128, 3), 128, np.uint8))
    save_wav(tmp_path / "speech.wav", np.zeros(4000, np.float32))
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError, as without the extra
    args = ["generate", "--source", str(tmp_path / "face.png"), "--audio", str(tmp_path / "speech.wav")]
    args += ["--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "out.mp4"), "--device", "cpu"]
    assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "pip install 'difftalk[face]'" in errors[0], caplog.text
    assert "Traceback" not in caplog.text and not (tmp_path / "out.mp4").exists()


def _capture_training(monkeypatch):
    """Replace the four trainers by stubs that record the config they were given."""
    from types import SimpleNamespace

    import difftalk.train.autoencoder
    import difftalk.train.diffusion
    import difftalk.train.lipgan
    import difftalk.train.syncnet

    seen = {}
    result = SimpleNamespace(step=0, last_loss=0.0, stopped_early=False, model_dir="model")

    def stub(name):
        def run(config, *args, **kwargs):
            seen[name] = config
            return result

        return run

    monkeypatch.setattr(difftalk.train.diffusion, "train_diffusion", stub("train"))
    monkeypatch.setattr(difftalk.train.autoencoder, "train_autoencoder", stub("train-autoencoder"))
    monkeypatch.setattr(difftalk.train.syncnet, "train_syncnet", stub("train-syncnet"))
    monkeypatch.setattr(difftalk.train.lipgan, "train_lipgan", stub("train-lipgan"))
    return seen


def test_set_keys_are_named_after_each_trainers_yaml_section(monkeypatch, caplog, tmp_path):
    seen = _capture_training(monkeypatch)
    runs = ["--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run")]
    assert main(["train", "--config", "tiny", "--set", "train.steps=7", "--set", "data.reference_min_distance=5"]) == 0
    assert seen["train"].train.steps == 7 and seen["train"].data.reference_min_distance == 5
    assert main(["train-autoencoder", "--config", "tiny", "--set", "autoencoder_train.steps=6"]) == 0
    assert seen["train-autoencoder"].autoencoder_train.steps == 6
    assert main(["train-syncnet", *runs, "--set", "syncnet_train.steps=5", "--set", "syncnet_train.batch_size=4"]) == 0
    assert (seen["train-syncnet"].steps, seen["train-syncnet"].batch_size) == (5, 4)
    assert main(["train-lipgan", *runs, "--set", "lipgan_train.steps=9", "--set", "lipgan_train.sync_weight=0.5"]) == 0
    assert (seen["train-lipgan"].steps, seen["train-lipgan"].sync_weight) == (9, 0.5)
    # fine-tuning with the sync loss: the flags and --set are checked together; the start's autoencoder is used
    start = ["--init-from", "ckpt/model", "--syncnet", "experts/loss"]
    assert main(["train", "--config", "synth_128", *start, "--set", "train.sync_weight=0.01"]) == 0
    train = seen["train"].train
    assert (train.init_from, train.autoencoder, train.syncnet, train.sync_weight) == (
        "ckpt/model",
        "",
        "experts/loss",
        0.01,
    )
    caplog.clear()
    assert main(["train", "--config", "tiny", "--set", "train.sync_weight=0.01"]) == 2
    assert "train.syncnet: is empty" in caplog.text
    # the bare field names of earlier versions still work for the two baselines' trainers
    assert main(["train-syncnet", *runs, "--set", "steps=11"]) == 0 and seen["train-syncnet"].steps == 11
    assert main(["train-lipgan", *runs, "--set", "steps=12"]) == 0 and seen["train-lipgan"].steps == 12
    # a YAML file may hold the section itself
    (tmp_path / "syncnet.yaml").write_text("syncnet_train:\n  steps: 13\n")
    assert main(["train-syncnet", *runs, "--config", str(tmp_path / "syncnet.yaml")]) == 0
    assert seen["train-syncnet"].steps == 13
    # wrong prefixes are a message naming the right form
    caplog.clear()
    assert main(["train-syncnet", *runs, "--set", "train.steps=5"]) == 2
    assert "syncnet_train.<field>" in caplog.text
    caplog.clear()
    assert main(["train", "--config", "tiny", "--set", "steps=5"]) == 2
    assert "train.steps=500" in caplog.text
    caplog.clear()
    assert main(["train-autoencoder", "--config", "tiny", "--set", "train.steps=5"]) == 0
    assert "did you mean autoencoder_train.steps" in caplog.text
    commands = _sub_parsers(build_parser())
    for command, section in (("train-syncnet", "syncnet_train"), ("train-lipgan", "lipgan_train")):
        text = " ".join(commands[command].format_help().split())
        assert f"{section}.steps=" in text and "bare field name" in text


def test_the_source_keeps_its_earlier_name_reference_on_the_command_line_and_in_python(monkeypatch):
    from difftalk.pipeline import DiffTalkPipeline

    parser = build_parser()
    for command in (["generate", "--checkpoint", "m"], ["stream", "--audio", "a.wav", "-o", "o.mp4"]):
        for flag in ("--source", "--reference"):
            assert parser.parse_args([*command, flag, "face.mp4"]).source == "face.mp4"
    seen = []
    monkeypatch.setattr(DiffTalkPipeline, "set_source", lambda self, source, options=None: seen.append(source))
    with pytest.warns(DeprecationWarning, match="set_source"):
        DiffTalkPipeline.set_reference(object.__new__(DiffTalkPipeline), "face.mp4")
    assert seen == ["face.mp4"]
