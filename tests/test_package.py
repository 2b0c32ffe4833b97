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


LAYERS = [
    "constants", "errors", "cli_options", "config", "checkpoint", "io", "preprocess", "synth", "data", "diffusion",
    "models", "pipeline", "metrics", "eval", "train", "demo_toy", "demo", "app_limits", "app_logic", "app",
    "cli_app", "cli_generate", "cli_stream", "cli_train", "cli", "__init__",
]  # fmt: skip
"""The package's parts in data-flow order (README, "Data flow and layout"): each imports only earlier ones."""


def _imports_between_parts() -> set[tuple[str, str]]:
    import ast

    root = Path(difftalk.__file__).parent
    edges = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        part = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "difftalk" and len(pieces) > 1 and pieces[1] != part:
                    edges.add((part, pieces[1]))
    return edges


def test_every_part_imports_only_parts_before_it_in_the_data_flow():
    edges = _imports_between_parts()
    unknown = {part for edge in edges for part in edge} - set(LAYERS)
    assert not unknown, f"place {sorted(unknown)} in LAYERS"
    backward = sorted((a, b) for a, b in edges if LAYERS.index(b) > LAYERS.index(a))
    assert not backward, f"imports against the data flow: {backward}"
    assert ("diffusion", "models") not in edges and ("preprocess", "data") not in edges
