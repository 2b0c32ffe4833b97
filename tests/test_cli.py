"""The command line: every sub-command has help, bad input gives a message (exit 2), no traceback."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from difftalk.cli import build_parser, main

COMMANDS = [
    "demo", "info", "convert-ldm-vq", "synth", "preprocess", "train", "train-autoencoder",
    "generate", "verify", "benchmark", "hdtf-clips", "evaluate", "train-syncnet", "train-lipgan",
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


def test_info_counts_parameters_without_allocating(caplog):
    caplog.set_level("INFO")
    assert main(["info", "--config", "paper_256"]) == 0
    assert "530,152,963" in caplog.text


def test_bad_config_is_a_message_not_a_traceback(caplog, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  unet:\n    heads: 3\n")
    assert main(["info", "--config", str(bad)]) == 2
    assert "model.unet.heads" in caplog.text
    assert main(["convert-ldm-vq", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "out")]) == 2
    assert "does not exist" in caplog.text


def test_demo_runs_end_to_end_quickly(tmp_path):
    from difftalk.demo_toy import run_demo

    result = run_demo(out_dir=tmp_path, steps=3, progress=False)
    assert result.grid_path.is_file() and result.grid_path.stat().st_size > 0
    assert math.isfinite(result.final_loss)
