"""Generation (stage ⑥): reference video or photo + speech → lip-synced MP4."""

from difftalk.pipeline.generate import DiffTalkPipeline, GenerationResult
from difftalk.pipeline.options import GenerateOptions

__all__ = ["DiffTalkPipeline", "GenerateOptions", "GenerationResult"]
