"""Values every stage of the data flow shares: the frame rate and the file names of the on-disk formats.

Lowest in the layering (it imports nothing from difftalk), so ``synth``, ``io``, ``preprocess``, ``data``,
``metrics``, ``pipeline`` and ``eval`` import these from here instead of spelling them again, and
``preprocess`` (which writes the clip folders) does not import ``data`` (which reads them). The formats
themselves are described in docs/formats.md.
"""

from __future__ import annotations

from typing import Literal

FPS = 25.0
"""Video frame rate of prepared clips, generated videos and the synthetic benchmark; the SyncNet
protocol assumes it too (4 MFCC steps per frame)."""

MANIFEST = "manifest.json"
"""A prepared dataset's index: ``DATA/manifest.json`` (written by preprocess, read by data)."""
CLIP_META = "meta.json"
"""A prepared clip's metadata: ``DATA/clips/<clip>/meta.json`` (its presence marks a finished clip)."""
RESULTS_NAME = "results.json"
"""The generated results' index: ``RESULTS/results.json`` (written by ``difftalk benchmark``, read by
``difftalk evaluate``)."""

FeatureBackend = Literal["mel", "whisper", "precomputed"]
"""Which per-frame audio features a clip carries (``features/<backend>.npy``) and a model is trained on."""

SILENCE_DB = -45.0
"""Generation's silence rule: frames whose audio is below this level (dB) get digital silence's features."""

SILENCE_HOLD_MAX = 8
"""The largest ``silence_hold`` (streaming computes this many frames of audio context on either side)."""

SILENCE_HOLD_FRAMES = 4
"""... and only when every frame within ± this many frames is below it too (``GenerateOptions.silence_hold``):
4 = the frame's whole 320 ms feature window is a pause. Measured on the shipped model against 0 (every quiet
frame), 8 held-out identities self/cross: LSE-C 0.484/0.447 vs 0.467/0.437, jaw r 0.894/0.926 vs 0.882/0.907
(benchmarks/results/silence_hold.md)."""
