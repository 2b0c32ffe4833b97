"""LipGANPipeline: the Wav2Lip-style GAN baseline through DiffTalkPipeline's crop / mask / paste-back path.

Stage ⑥ for the Table 3 baseline. Everything except the generator is DiffTalkPipeline's: the same
source analysis (:func:`~difftalk.pipeline.source.analyze_source`: tracked landmarks, smoothed
crop boxes, faceless frames passed through), the same audio handling (loaded, fitted to the output
length, per-frame feature windows, digital-silence features for silent frames), the same looping of a
short video, the same mouth mask (``data.masks``), the same paste weight (``pipeline.paste``),
neighbour blending (``temporal_smoothing``), invisible watermark and provenance tags. Per output frame
t the generator sees that frame's own crop with the mouth masked, the crop of the reference frame
(``options.reference_frame``, the first frame by default: Wav2Lip's identity reference) and the audio
windows of the frames around t; its crop is pasted back on the lower face inside the mouth mask only
(:func:`~difftalk.pipeline.paste.paste_weight`), so every pixel outside it is the source's. There is
no sampling: ``num_steps``, ``eta``, ``seed`` and ``progressive_reference`` of
:class:`GenerateOptions` do not apply; ``lanes · chunk`` frames form one batch. Frames are streamed
batch by batch (memory does not grow with the video's length).

Example::

    pipe = LipGANPipeline.from_pretrained("runs/lipgan/checkpoints/lipgan")
    pipe.set_source("face.mp4")
    pipe.generate("speech.wav", "out.mp4")
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from difftalk.data.masks import apply_mask
from difftalk.data.transforms import to_tensor, to_uint8
from difftalk.models.lipgan import LipGANGenerator
from difftalk.pipeline.base import (
    FPS,
    Driving,
    DrivingAudio,
    FaceCrop,
    GeneratedMouth,
    GenerationResult,
    OutputFrame,
    TalkingHeadPipeline,
    TemporalBlend,
    compose_frame,
    crop_inputs,
    feature_backend_of,
    first_reference,
    prepare_driving_audio,
)
from difftalk.pipeline.options import GenerateOptions
from difftalk.pipeline.paste import paste_weight
from difftalk.pipeline.source import SourceFrames

logger = logging.getLogger(__name__)

METHOD = "lipgan"


class LipGANPipeline(TalkingHeadPipeline):
    """Generate talking-head videos with a trained :class:`LipGANGenerator` (see the module docstring)."""

    method = METHOD

    def __init__(
        self,
        generator: LipGANGenerator,
        feature_backend: str = "mel",
        model_name: str = METHOD,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(feature_backend, generator.config.feature_dim, model_name, device, dtype)
        self.generator = generator.to(device=device, dtype=dtype).eval()

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> LipGANPipeline:
        """Load a ``LipGANGenerator`` folder (``<run>/checkpoints/lipgan`` of ``difftalk train-lipgan``)."""
        generator = LipGANGenerator.from_pretrained(directory)
        backend = feature_backend_of(directory, LipGANGenerator.KIND, generator.config.feature_dim)
        return cls(generator, backend, str(directory), device=device, dtype=dtype)

    def prepare_audio(self, audio: str | Path | np.ndarray, options: GenerateOptions) -> DrivingAudio:
        """The driving audio fitted to the output (see :func:`prepare_driving_audio`)."""
        return prepare_driving_audio(audio, self.track(), self.feature_backend, options)

    @torch.no_grad()
    def _generate_crops(
        self, crops: list[np.ndarray], masks: list[np.ndarray], reference: np.ndarray, windows: np.ndarray
    ) -> list[np.ndarray]:
        """Generated uint8 crops ``(S, S, 3)`` for a batch of frames (see :meth:`LipGANGenerator.forward`)."""
        device, dtype = self.device, self.dtype
        frames = to_tensor(np.stack(crops)).to(device, dtype)
        mask = torch.from_numpy(np.stack(masks))[:, None].to(device, dtype)
        references = to_tensor(reference)[None].expand(len(crops), -1, -1, -1).to(device, dtype)
        audio = torch.from_numpy(windows).to(device, dtype)
        return list(to_uint8(self.generator(apply_mask(frames, mask), references, audio)))

    def iter_frames(self, driving: Driving, options: GenerateOptions) -> Iterator[OutputFrame]:
        """Frames in batches of ``lanes · chunk``; each frame's mouth comes from the generator in one pass."""
        track = self.track()
        config = self.generator.config
        size, context = config.image_size, config.context_frames
        frames = SourceFrames(track, FPS)
        first = first_reference(track, options.reference_frame)
        reference = crop_inputs(frames[first], track, first, size).image
        batch = options.lanes * options.chunk
        smoother = TemporalBlend(options.temporal_smoothing)

        base = 0
        while driving.has_frame(base):
            present = [t for t in range(base, base + batch) if driving.has_frame(t)]
            times: list[int] = []
            items: list[FaceCrop] = []
            for t in present:
                source = driving.source(t)
                if track.found[source]:
                    times.append(t)
                    items.append(crop_inputs(frames[source], track, source, size))
            results: dict[int, GeneratedMouth] = {}
            if times:
                windows = driving.windows(np.asarray(times), context)
                generated = self._generate_crops(
                    [it.image for it in items], [it.mask for it in items], reference, windows
                )
                for t, crop, item in zip(times, generated, items, strict=True):
                    results[t] = GeneratedMouth(crop, paste_weight(item.landmarks, size, options.feather), item.box)
            for t in present:
                for ready in smoother.push(t, results.get(t)):
                    yield compose_frame(frames, driving, ready)
            base += batch
            driving.release(base, context)
        for ready in smoother.flush():
            yield compose_frame(frames, driving, ready)


def generate_lipgan(
    model_dir: str | Path,
    source: str | Path,
    audio: str | Path | np.ndarray,
    output: str | Path,
    options: GenerateOptions | None = None,
    device: torch.device | str = "cpu",
) -> GenerationResult:
    """One-shot: load the generator in ``model_dir``, dub ``source`` (video or photo) with ``audio``, write ``output``.

    Raises:
        FileNotFoundError / CheckpointError: ``model_dir`` is not a ``LipGANGenerator`` folder.
        FileNotFoundError / VideoError / NoFaceError: the source is missing, unreadable or faceless.
    """
    options = options or GenerateOptions()
    pipe = LipGANPipeline.from_pretrained(model_dir, device=device)
    pipe.set_source(source, options)
    return pipe.generate(audio, output, options)
