"""The synthetic talking-face benchmark generator (stage ⓪: makes the data the pipeline trains on).

Real talking-face data cannot be downloaded here, so difftalk ships a benchmark with known ground
truth. Each identity (:mod:`~difftalk.synth.identity`) is a set of face, voice and scene parameters.
Per clip a random utterance becomes an articulation track (:mod:`~difftalk.synth.articulation`:
jaw opening, lip spread, rounding, closure, voicing) that drives both a source–filter speech
synthesiser (:mod:`~difftalk.synth.speech`) and a 2-D cartoon face renderer
(:mod:`~difftalk.synth.geometry` places the 68 iBUG landmarks, :mod:`~difftalk.synth.render` draws the
face from them), so the audio really determines the mouth. :mod:`~difftalk.synth.generate` writes
videos plus ground truth in the layout of ``docs/formats.md``. Nothing runs at import time.
"""

from __future__ import annotations

from difftalk.synth.articulation import CHANNELS, ArticulationTrack, sample_articulation
from difftalk.synth.generate import SynthClip, SynthSummary, make_clip, make_contact_sheet, run_synth
from difftalk.synth.geometry import FaceModel, FaceState, HeadPose
from difftalk.synth.identity import Identity, sample_identity
from difftalk.synth.render import FaceRenderer, RenderedFrame
from difftalk.synth.speech import synthesize_speech

__all__ = [
    "CHANNELS",
    "ArticulationTrack",
    "FaceModel",
    "FaceRenderer",
    "FaceState",
    "HeadPose",
    "Identity",
    "RenderedFrame",
    "SynthClip",
    "SynthSummary",
    "make_clip",
    "make_contact_sheet",
    "run_synth",
    "sample_articulation",
    "sample_identity",
    "synthesize_speech",
]
