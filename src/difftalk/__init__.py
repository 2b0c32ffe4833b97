"""difftalk: speech-driven talking-head video with a conditional latent diffusion model (DiffTalk).

The public API is imported lazily so that ``import difftalk`` does no work (no torch import)::

    from difftalk import DiffTalkPipeline, GenerateOptions
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
"""The one place the version is written (pyproject.toml reads it: ``[tool.setuptools.dynamic]``)."""

_PUBLIC = {
    "DiffTalkPipeline": "difftalk.pipeline.generate",
    "GenerateOptions": "difftalk.pipeline.options",
    "DiffTalkModel": "difftalk.models.difftalk",
    "DiffTalkConditions": "difftalk.models.difftalk",
    "Autoencoder": "difftalk.models.autoencoder",
    "DiffTalkConfig": "difftalk.config",
    "ModelConfig": "difftalk.config",
    "SamplerConfig": "difftalk.config",
    "load_config": "difftalk.config",
    "sample_ddim": "difftalk.diffusion.ddim",
}

__all__ = [
    "Autoencoder",
    "DiffTalkConditions",
    "DiffTalkConfig",
    "DiffTalkModel",
    "DiffTalkPipeline",
    "GenerateOptions",
    "ModelConfig",
    "SamplerConfig",
    "__version__",
    "load_config",
    "sample_ddim",
]

if TYPE_CHECKING:
    from difftalk.config import DiffTalkConfig, ModelConfig, SamplerConfig, load_config
    from difftalk.diffusion.ddim import sample_ddim
    from difftalk.models.autoencoder import Autoencoder
    from difftalk.models.difftalk import DiffTalkConditions, DiffTalkModel
    from difftalk.pipeline.generate import DiffTalkPipeline
    from difftalk.pipeline.options import GenerateOptions


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'difftalk' has no attribute {name!r}")
