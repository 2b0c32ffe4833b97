"""What ``difftalk app`` does, without gradio: generation requests, the pipeline cache, verification.

:func:`run_generation` checks a request's uploads against the limits (:mod:`difftalk.app_limits`),
loads the pipeline once per (checkpoint, device, dtype) and keeps it (:class:`PipelineCache`; the
source is analysed again only when the file or the analysis options change), writes a watermarked
MP4 and checks the watermark of what it wrote. Bad input raises ``ValueError`` (or
``FileNotFoundError``, :class:`~difftalk.errors.MissingExtraError`), which the page shows as a message;
:mod:`difftalk.app` wires these functions to gradio.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from difftalk.app_limits import MediaSummary, UploadError, UploadLimits, check_source, check_speech, check_upload
from difftalk.errors import MissingExtraError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from difftalk.pipeline import DiffTalkPipeline, GenerateOptions

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = Path("outputs/app")
AUTO = "Auto"
SAMPLERS: dict[str, tuple[str, str]] = {
    AUTO: ("", "the checkpoint's own sampler and steps: one step for the shipped student, DDIM 5 for its teacher"),
    "DDIM": ("ddim", "DDIM (η = 0): deterministic given the seed, the paper's sampler"),
    "DPM-Solver++": ("dpmpp", "DPM-Solver++ (2M): as good as DDIM at 5-10 steps, worse below 4"),
    "UniPC": ("unipc", "UniPC: as good as DDIM at 5-10 steps, worse below 4"),
    "LCM": ("lcm", "LCM: 1-4 steps, for distilled students (difftalk distill) only"),
}
"""Samplers the page offers: label → (:data:`difftalk.diffusion.SAMPLERS` name, description); ``Auto`` = the
checkpoint's recorded sampler and steps (the steps slider is then ignored)."""
SYNTHETIC_SECONDS = 4.0
"""Length of the built-in synthetic identity's clip and speech."""
USER_ERRORS = (ValueError, FileNotFoundError, MissingExtraError)
"""What a run raises for bad input (unreadable or oversized uploads, no face, a missing checkpoint or extra):
shown on the page as a message, without a traceback."""
INPUT_UPLOAD, INPUT_SYNTHETIC = "Upload video/photo + speech", "Built-in synthetic identity + speech"


@dataclass(frozen=True)
class AppConfig:
    """How the app serves: the default checkpoint and device, the upload limits and where videos go."""

    checkpoint: str = ""
    """Checkpoint folder or hub id pre-filled on the page; empty = the shipped one-step demo student."""
    sampler: str = AUTO
    """Sampler pre-selected on the page (a :data:`SAMPLERS` label)."""
    device: str | None = None
    """Pre-selected device; None = ``auto`` (cuda if available, else cpu)."""
    limits: UploadLimits = field(default_factory=UploadLimits)
    output_dir: Path = DEFAULT_OUTPUT_DIR
    """Generated videos (``<time>_<source>_<speech>.mp4``) and the synthetic inputs (``synthetic/``)."""
    max_pipelines: int = 2
    """Loaded pipelines kept in memory (least recently used dropped first)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One click on *Generate*: the inputs and the options the page sends."""

    source: str | None = None
    """Uploaded video or photo (ignored with ``synthetic``)."""
    speech: str | None = None
    """Uploaded speech (ignored with ``synthetic``)."""
    synthetic: bool = False
    """Use the built-in synthetic identity and new speech in its voice instead of uploads."""
    synthetic_seed: int = 2026
    """The identity (and voice) of the synthetic speaker; 2026 = ``difftalk.demo.DEMO_SEED``, as in the demo."""
    checkpoint: str = ""
    sampler: str = AUTO
    """A :data:`SAMPLERS` label; ``Auto``: the checkpoint's sampler and ``steps`` ignored."""
    steps: int = 5
    noise: Literal["independent", "shared"] = "shared"
    progressive_reference: bool = False
    temporal_smoothing: float = 0.2
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class AppResult:
    """What a run wrote and what the page shows about it."""

    video: Path
    summary: str
    """Markdown: frames, time, settings, the watermark check of the output."""
    warnings: tuple[str, ...] = ()


def generate_options(request: GenerationRequest) -> GenerateOptions:
    """The pipeline options of a request (the sampler is checked against :data:`SAMPLERS`).

    Raises:
        ValueError: an unknown sampler, steps < 1, or smoothing outside [0, 0.5].
    """
    from difftalk.pipeline import GenerateOptions

    if request.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {request.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    auto = request.sampler == AUTO
    if not auto and int(request.steps) < 1:
        raise ValueError(f"the number of {request.sampler} steps must be at least 1, got {request.steps}")
    return GenerateOptions(
        num_steps=None if auto else int(request.steps),
        sampler=SAMPLERS[request.sampler][0] or None,
        progressive_reference=bool(request.progressive_reference),
        # without the progressive reference the lanes are independent: batch 8 frames (as the demo does)
        lanes=1 if request.progressive_reference else 8,
        temporal_smoothing=float(request.temporal_smoothing),
        noise=request.noise,
        seed=int(request.seed),
        watermark=True,
        progress=True,  # tqdm bars, which the page's progress bar follows
    )


class PipelineCache:
    """Pipelines by (checkpoint, device, dtype), loaded once (each keeps its source analyses)."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self._pipelines: OrderedDict[tuple[str, str, str], DiffTalkPipeline] = OrderedDict()
        self.lock = threading.Lock()
        """Held for a whole run: a pipeline holds one source at a time."""
        self.loads = 0

    def get(self, checkpoint: str, device: str, dtype: torch.dtype) -> DiffTalkPipeline:
        """The pipeline of ``checkpoint`` on ``device``, loaded on first use."""
        from difftalk.pipeline import DiffTalkPipeline

        key = (checkpoint, device, str(dtype))
        if key not in self._pipelines:
            logger.info("loading %s on %s (%s)", checkpoint, device, dtype)
            self._pipelines[key] = DiffTalkPipeline.from_pretrained(checkpoint, device=device, dtype=dtype)
            self.loads += 1
            while len(self._pipelines) > self.size:
                self._pipelines.popitem(last=False)
        self._pipelines.move_to_end(key)
        return self._pipelines[key]

    def prepare(
        self, checkpoint: str, device: str, dtype: torch.dtype, source: Path, options: GenerateOptions
    ) -> DiffTalkPipeline:
        """:meth:`get`, then ``set_source(source)``: the pipeline keeps its analyses, so an unchanged
        file with the same landmark source and size cap is not analysed again."""
        pipe = self.get(checkpoint, device, dtype)
        pipe.set_source(source, options)
        return pipe

    @property
    def analyses(self) -> int:
        """Reference analyses run by the cached pipelines."""
        return sum(pipe.analyses for pipe in self._pipelines.values())


def safe_text(text: str) -> str:
    """``text`` with ``&``, ``<`` and ``>`` escaped for the page (file names come from users)."""
    return html.escape(text, quote=False)


def _stem(path: Path) -> str:
    """A file-name-safe, short version of an upload's stem."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:40] or "input"


def _output_path(output_dir: Path, source: Path, speech: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}_{_stem(source)}_{_stem(speech)}"
    path, index = output_dir / f"{base}.mp4", 1
    while path.exists():
        index += 1
        path = output_dir / f"{base}_{index}.mp4"
    return path


def resolve_inputs(request: GenerationRequest, config: AppConfig) -> tuple[Path, Path, list[MediaSummary]]:
    """The source and speech of a request, checked against the limits (or the rendered synthetic pair).

    Raises:
        UploadError: a missing upload or one that breaks a limit or cannot be read.
    """
    if request.synthetic:
        from difftalk.demo import render_synthetic_inputs

        folder = config.output_dir / "synthetic" / f"seed{int(request.synthetic_seed)}_{SYNTHETIC_SECONDS:g}s"
        pair = render_synthetic_inputs(folder, seconds=SYNTHETIC_SECONDS, seed=int(request.synthetic_seed))
        return pair.source, pair.speech, []
    if not request.source:
        raise UploadError("no source: upload a video or a photo of the face (or choose the synthetic identity)")
    if not request.speech:
        raise UploadError("no speech: upload a WAV, MP3, M4A or FLAC file (or choose the synthetic identity)")
    checked = [check_source(request.source, config.limits), check_speech(request.speech, config.limits)]
    return Path(request.source), Path(request.speech), checked


def run_generation(
    request: GenerationRequest,
    config: AppConfig,
    cache: PipelineCache,
    progress: Callable[..., object] | None = None,
) -> AppResult:
    """Check the inputs, load (or reuse) the pipeline and write a watermarked MP4 into ``config.output_dir``.

    Args:
        progress: called as ``progress(fraction, desc=...)`` at each stage (a ``gradio.Progress``).

    Raises:
        UploadError, ValueError, FileNotFoundError, MissingExtraError: bad input (:data:`USER_ERRORS`).
    """
    from difftalk.cli_options import resolve_device, resolve_dtype
    from difftalk.io.watermark import verify_file

    def step(fraction: float, text: str) -> None:
        logger.info("%s", text)
        if progress is not None:
            progress(fraction, desc=text)

    step(0.0, "checking the inputs")
    source, speech, checked = resolve_inputs(request, config)  # first: refused uploads are reported at once
    options = generate_options(request)
    device = resolve_device(None if request.device in ("", "auto") else request.device, default="auto")
    dtype = resolve_dtype("auto", device)  # bf16 where the hardware computes it (within noise of fp32)
    checkpoint = request.checkpoint.strip() or config.checkpoint or _demo_model()
    with cache.lock:
        step(0.05, "loading the model")
        pipe = cache.get(checkpoint, device, dtype)
        warnings = []
        if options.num_steps is not None and options.num_steps < pipe.default_steps:
            warnings.append(
                f"{options.num_steps} {request.sampler} steps are fewer than the {pipe.default_steps} this checkpoint "
                "recommends: expect a blurrier mouth"
            )
        pipe.check_steps(options.num_steps, options.sampler)
        steps = options.num_steps or pipe.default_steps
        sampler_text = request.sampler if request.sampler != AUTO else f"{AUTO} = {pipe.sampler_of(options).upper()}"
        step(0.1, "analysing the source")
        cache.prepare(checkpoint, device, dtype, source, options)
        step(0.2, "generating")
        result = pipe.generate(speech, _output_path(config.output_dir, source, speech), options)
    step(0.95, "verifying the watermark")
    verification = verify_file(result.output, max_frames=50)
    fixed = "progressive reference" if options.progressive_reference else "fixed reference"
    inputs = [safe_text(item.describe()) for item in checked] or [
        f"built-in synthetic identity (seed {int(request.synthetic_seed)}) with new speech in its voice"
    ]
    lines = [
        f"**{result.num_frames} frames ({result.duration:.1f} s) in {result.seconds:.0f} s** "
        f"({result.frames_per_second:.1f} frames/s; {result.generated_frames} with a generated mouth)",
        f"model `{safe_text(Path(checkpoint).name or checkpoint)}` on {device}, {sampler_text} "
        f"{steps} step{'s' if steps != 1 else ''}, {options.noise} noise, {fixed}, "
        f"smoothing {options.temporal_smoothing:g}, "
        f"seed {options.seed}",
        *inputs,
        f"output: {safe_text(verification.summary.replace(checkpoint, Path(checkpoint).name))}",  # no server paths
    ]
    return AppResult(result.output, "  \n".join(lines), tuple(warnings))


def verify_upload(path: str | None, limits: UploadLimits) -> str:
    """``verify_file``'s one-line summary of an uploaded video.

    Raises:
        UploadError: no file, too large, or not a readable video.
    """
    from difftalk.io.video import VideoError
    from difftalk.io.watermark import verify_file

    if not path:
        raise UploadError("no file: upload a video to check")
    check_upload(path, limits, "verify")
    try:
        return verify_file(path).summary.replace(str(path), Path(path).name)
    except VideoError as exc:
        raise UploadError(f"{Path(path).name!r} cannot be read as a video: {exc}".replace(str(path), "")) from None


def _demo_model() -> str:
    from difftalk.demo import DEMO_STUDENT

    return str(DEMO_STUDENT)


def preview_frame(path: str | Path, max_side: int = 360) -> np.ndarray:
    """``(H, W, 3)`` uint8: the first frame of a video or the photo, its longer side at most ``max_side`` px."""
    import cv2
    import numpy as np

    from difftalk.io.image import read_image
    from difftalk.io.video import is_image_file, iter_frames

    image = read_image(path) if is_image_file(path) else next(iter(iter_frames(path)))
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    return image


def available_devices() -> list[str]:
    """``auto``, ``cpu`` and the accelerators this machine and torch build can use."""
    import torch

    devices = ["auto", "cpu"]
    devices += ["cuda"] if torch.cuda.is_available() else []
    devices += ["mps"] if torch.backends.mps.is_available() else []
    return devices
