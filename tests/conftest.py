"""Shared fixtures: the tiny preset and small random condition batches (no downloads, CPU only)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from tests.helpers import single_thread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    with single_thread():
        yield


@pytest.fixture
def tiny_config():
    from difftalk.config import load_config

    return load_config("tiny")


@pytest.fixture
def make_conditions():
    """Random (frames, conditions) for a DiffTalkModel and batch size."""

    def make(model, batch: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        cfg = model.config
        size = cfg.autoencoder.image_size
        audio = cfg.audio_encoder
        frames = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
        conditions = model.prepare_conditions(
            audio_features=torch.randn(
                batch, audio.context_frames, audio.window, audio.feature_dim, generator=generator
            ),
            landmarks=torch.rand(batch, cfg.landmark_encoder.num_points, 2, generator=generator) * 2 - 1,
            reference_frames=torch.rand(batch, 3, size, size, generator=generator) * 2 - 1,
            masked_frames=frames * 0.5,
        )
        return frames, conditions

    return make


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory):
    """A small prepared dataset (3 identities × 40 frames at 64², one held out), written once per session."""
    from tests.fakes import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("prepared"))
