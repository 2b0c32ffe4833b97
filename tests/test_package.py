"""The package's public API (src/difftalk/__init__.py): a light ``import difftalk``, lazy names, one version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import difftalk

HEAVY = ("torch", "diffusers", "numpy", "cv2", "av", "librosa", "gradio")
"""Modules ``import difftalk`` must not load (each costs from tens of ms to seconds)."""

_PROBE = """
import json, sys
import difftalk
eager = sorted(name for name in {heavy!r} if name in sys.modules)
from difftalk import DiffTalkPipeline, GenerateOptions
print(json.dumps({{
    "eager": eager,
    "pipeline": f"{{DiffTalkPipeline.__module__}}.{{DiffTalkPipeline.__name__}}",
    "options": f"{{GenerateOptions.__module__}}.{{GenerateOptions.__name__}}",
    "torch_after": "torch" in sys.modules,
}}))
"""


def test_import_difftalk_loads_no_heavy_module_and_the_readme_names_resolve():
    # a fresh interpreter: this test process has long imported torch
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY)], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["eager"] == [], f"`import difftalk` imported {report['eager']} eagerly"
    assert report["pipeline"] == "difftalk.pipeline.generate.DiffTalkPipeline"
    assert report["options"] == "difftalk.pipeline.options.GenerateOptions"
    assert report["torch_after"]  # resolving a name imports its module, on first use


def test_every_public_name_resolves_and_unknown_names_raise():
    for name in difftalk.__all__:
        assert getattr(difftalk, name) is not None, name
    from difftalk.pipeline import DiffTalkPipeline, GenerateOptions

    assert difftalk.DiffTalkPipeline is DiffTalkPipeline
    assert difftalk.GenerateOptions is GenerateOptions
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = difftalk.NoSuchThing


def test_the_version_is_written_once_and_pyproject_reads_it():
    from setuptools.config.pyprojecttoml import read_configuration

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = read_configuration(pyproject, expand=True)["project"]
    assert "version" in project["dynamic"]
    assert project["version"] == difftalk.__version__
