"""``difftalk demo``: lip-sync a never-seen synthetic identity to new speech with the shipped model.

No arguments, no downloads, CPU in a few minutes:

1. draws a new identity from a seed no training run used, renders a clip of it talking (its own
   speech) and writes it like the synthetic benchmark does (video + ground-truth landmarks);
2. synthesises *new* speech in the same voice (a different utterance);
3. dubs the clip with the new speech using the one-step student in ``difftalk/assets/demo_student``
   (distilled from the model in ``difftalk/assets/demo_model``, trained with ``difftalk train --config
   synth_128``, whose held-out scores it matches: docs/results.md §9), or that model itself (``--teacher``);
4. scores lip sync with the shipped SyncNet expert: the dubbed video against the new speech, and for
   comparison the original clip against its own speech and against the new speech (undubbed);
5. writes ``difftalk_demo.mp4`` and a frame strip PNG (original | dubbed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from difftalk.cli_options import resolve_dtype
from difftalk.io.audio import load_audio, save_wav
from difftalk.io.image import save_image_grid
from difftalk.io.video import iter_frames
from difftalk.metrics.sync import SyncScore, score_sync
from difftalk.models.syncnet import load_syncnet
from difftalk.pipeline import DiffTalkPipeline, GenerateOptions
from difftalk.preprocess.crop import crop_image
from difftalk.synth import sample_articulation, synthesize_speech
from difftalk.synth.generate import identity_for, run_synth

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_MODEL = ASSETS / "demo_model"
DEMO_STUDENT = ASSETS / "demo_student"
"""The one-step student of :data:`DEMO_MODEL` (``difftalk distill --set distill.method=direct``), the demo's model."""
DEMO_SYNCNET = ASSETS / "demo_syncnet"
DEMO_SEED = 2026
"""Identities and speech of the demo come from this seed; the shipped model was trained on seed 0."""


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    video: Path
    strip: Path
    sync_dubbed: SyncScore | None
    """The dubbed video against the new speech."""
    sync_original: SyncScore | None
    """The original clip against its own speech (what real sync looks like)."""
    sync_undubbed: SyncScore | None
    """The original clip against the new speech (what no lip-sync looks like)."""
    seconds: float


def _sync(model: object, video: Path, boxes: np.ndarray, audio: np.ndarray) -> SyncScore | None:
    def crops() -> object:
        for index, frame in enumerate(iter_frames(video)):
            if index >= len(boxes):
                break
            yield crop_image(frame, boxes[index], 128)[None]

    return score_sync(model, crops(), audio)  # type: ignore[arg-type]


@dataclass
class SyntheticInputs:
    """A never-seen synthetic identity talking, and new speech in its voice: what the demo dubs."""

    source: Path
    """The identity's clip (MP4, 256², 25 fps, its own speech as audio) with ground-truth landmarks beside it
    (``../ground_truth/<clip>/``), so the pipeline needs no face detector."""
    own_speech: Path
    """The clip's own speech (16 kHz mono WAV)."""
    speech: Path
    """New speech in the same voice, a different utterance of the same length (16 kHz mono WAV)."""
    speech_samples: np.ndarray
    """``(N,)`` float32 16 kHz samples of ``speech`` as synthesised (before the WAV's 16-bit rounding)."""


def render_synthetic_inputs(out_dir: str | Path, seconds: float = 6.0, seed: int = DEMO_SEED) -> SyntheticInputs:
    """Render a never-seen identity talking for ``seconds`` and synthesise new speech in its voice.

    Writes ``out_dir/source/`` (a one-clip synthetic benchmark: video + ground truth; resumable, so a
    second call with the same settings reuses the clip) and ``out_dir/new_speech.wav``. Deterministic in
    ``seed``; the shipped model was trained on seed 0's identities, :data:`DEMO_SEED` is never used in training.

    Raises:
        ValueError: ``seconds`` gives no frame, or ``out_dir/source`` holds a clip made with other settings.
    """
    out = Path(out_dir)
    logger.info("rendering a never-seen identity (seed %d) talking for %.0f s", seed, seconds)
    summary = run_synth(out / "source", identities=1, seconds=seconds, size=256, seed=seed, test_fraction=0.0,
                        progress=False)  # fmt: skip
    clip = summary.clips[0]
    identity = identity_for(seed, 0)
    generator = np.random.default_rng([seed, 7])
    frames = round(seconds * 25)
    speech = synthesize_speech(sample_articulation(generator, frames, identity.speaking_rate), identity, generator)
    return SyntheticInputs(
        source=out / "source" / "videos" / f"{clip}.mp4",
        own_speech=out / "source" / "ground_truth" / clip / "audio.wav",
        speech=save_wav(out / "new_speech.wav", speech),
        speech_samples=speech,
    )


def demo_options(steps: int | None = None, progress: bool = True) -> GenerateOptions:
    """The generation settings the demo (and the web app's defaults) use with the shipped model; ``steps``
    None = the checkpoint's (DDIM 5 for the shipped model: within noise of DDIM 25 on the held-out
    identities, benchmarks/results/samplers_quality.md)."""
    # The shipped CPU-trained model drifts when fed its own frames: on held-out clips the fixed
    # reference scores better on every metric (benchmarks/results/paper_progressive.md), so the demo
    # uses it; the pipeline's default stays the paper's progressive reference. One draw of DDIM noise
    # for the whole video (benchmarks/results/paper_noise.md): cross-driven LSE-C 0.25 -> 0.46, jaw r
    # 0.79 -> 0.88 and no flicker, at the cost of smaller mouth openings.
    return GenerateOptions(num_steps=steps, lanes=8, progressive_reference=False, noise="shared", progress=progress)


def run_demo(
    out_dir: str | Path = "outputs/demo", seconds: float = 6.0, steps: int | None = None, seed: int = DEMO_SEED,
    progress: bool = True, model: Path = DEMO_STUDENT,
) -> DemoResult:  # fmt: skip
    """Run the demo (see the module docstring) with ``model`` (the shipped student, or :data:`DEMO_MODEL`);
    raises FileNotFoundError if its weights are missing."""
    if not (model / "weights.safetensors").is_file():
        raise FileNotFoundError(
            f"the demo model is missing from {model}; reinstall difftalk or run `difftalk demo --toy`"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = render_synthetic_inputs(out, seconds=seconds, seed=seed)
    source, speech, speech_path = inputs.source, inputs.speech_samples, inputs.speech
    own_speech = load_audio(inputs.own_speech)

    options = demo_options(steps, progress)
    dtype = resolve_dtype("auto", "cpu")  # bf16 on CPUs that compute it natively: within noise of fp32, faster
    pipe = DiffTalkPipeline.from_pretrained(model, dtype=dtype)
    logger.info("demo model %s on the CPU in %s", model.name, str(dtype).removeprefix("torch."))
    track = pipe.set_source(source, options)
    result = pipe.generate(speech_path, out / "difftalk_demo.mp4", options)

    scores: dict[str, SyncScore | None] = {"dubbed": None, "original": None, "undubbed": None}
    if (DEMO_SYNCNET / "weights.safetensors").is_file():
        expert = load_syncnet(DEMO_SYNCNET)
        scores["dubbed"] = _sync(expert, result.output, track.boxes, speech)
        scores["original"] = _sync(expert, source, track.boxes, own_speech)
        scores["undubbed"] = _sync(expert, source, track.boxes, speech)
    else:
        logger.warning("no sync expert in %s: sync scores skipped", DEMO_SYNCNET)

    picks = np.linspace(0, result.num_frames - 1, 8).round().astype(int)
    original = [crop_image(f, track.boxes[i], 128) for i, f in enumerate(iter_frames(source)) if i in picks]
    dubbed = [crop_image(f, track.boxes[i], 128) for i, f in enumerate(iter_frames(result.output)) if i in picks]
    strip = save_image_grid(out / "difftalk_demo_strip.png", [original, dubbed])
    return DemoResult(result.output, strip, scores["dubbed"], scores["original"], scores["undubbed"], result.seconds)
