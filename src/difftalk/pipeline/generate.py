"""DiffTalkPipeline: a reference video or photo + speech → a lip-synced, watermarked MP4 (stage ⑥).

Per output frame t (25 fps): the reference frame it shows (looped or trimmed to the audio), its face
crop, the mouth mask of ``data.masks``, the masked crop, the mouth-free landmarks and the audio
windows of frames t-w … t+w become the conditions; masked-z_T DDIM regenerates only the mouth; the
previous generated frame is the next reference (progressive reference); neighbouring generated
mouths are blended (frame interpolation against jitter); the crop is pasted back softly into the
full frame; frames without a face pass through untouched. Frames are streamed in super-chunks, so
memory does not grow with the length of the input. The MP4 is written atomically with the audio,
an invisible watermark in every frame and provenance metadata.

"Set the reference once, then drive it many times"::

    pipe = DiffTalkPipeline.from_pretrained("checkpoints/demo")
    pipe.set_reference("face.mp4")
    pipe.generate("speech1.wav", "out1.mp4")
    pipe.generate("speech2.wav", "out2.mp4")
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from difftalk.checkpoint import read_checkpoint_meta
from difftalk.data.masks import apply_mask, latent_mask, mouth_mask
from difftalk.data.transforms import to_tensor, to_uint8
from difftalk.diffusion.ddim import randn, sample_ddim
from difftalk.io.audio import SAMPLE_RATE, fit_length, load_audio
from difftalk.io.video import VideoWriter
from difftalk.models.difftalk import DiffTalkModel
from difftalk.pipeline.options import GenerateOptions
from difftalk.pipeline.paste import feathered_mask, paste_back
from difftalk.pipeline.source import ReferenceFrames, ReferenceTrack, analyze_reference, source_indices
from difftalk.preprocess.audio_features import FEATURE_DIMS, compute_features
from difftalk.preprocess.crop import crop_image, frame_to_crop
from difftalk.preprocess.landmarks import condition_landmarks

logger = logging.getLogger(__name__)

FPS = 25.0
WATERMARK_PAYLOAD = 0x44546C6B  # "DTlk"


@dataclass
class GenerationResult:
    """What :meth:`DiffTalkPipeline.generate` wrote."""

    output: Path
    num_frames: int
    duration: float
    generated_frames: int
    """Frames whose mouth was generated (the others had no face and were passed through)."""
    seconds: float
    """Wall time of the whole run."""

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / max(self.seconds, 1e-9)


def silent_frames(audio: np.ndarray, num_frames: int, threshold_db: float, fps: float = FPS) -> np.ndarray:
    """``(num_frames,)`` bool: the RMS of the audio within ±20 ms of the frame's time is below ``threshold_db``."""
    half = int(0.02 * SAMPLE_RATE)
    centres = (np.arange(num_frames) / fps * SAMPLE_RATE).astype(np.int64)
    padded = np.pad(audio.astype(np.float64), (half, half))
    energy = np.concatenate([[0.0], np.cumsum(padded**2)])
    rms = np.sqrt((energy[centres + 2 * half] - energy[centres]) / (2 * half))
    return 20 * np.log10(rms + 1e-12) < threshold_db


class DiffTalkPipeline:
    """Generate talking-head videos with a trained :class:`DiffTalkModel`."""

    def __init__(
        self,
        model: DiffTalkModel,
        feature_backend: str = "mel",
        default_steps: int = 50,
        model_name: str = "difftalk",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.feature_backend = feature_backend
        self.default_steps = default_steps
        self.model_name = model_name
        self.device = torch.device(device)
        self.dtype = dtype
        self.reference: ReferenceTrack | None = None
        self._reference_options: GenerateOptions | None = None
        expected = FEATURE_DIMS.get(feature_backend)
        if expected is not None and expected != model.config.audio_encoder.feature_dim:
            raise ValueError(
                f"the model expects {model.config.audio_encoder.feature_dim} audio features, but the "
                f"'{feature_backend}' backend gives {expected}"
            )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> DiffTalkPipeline:
        """Load a checkpoint folder written by ``difftalk train`` (``checkpoints/model``)."""
        meta = read_checkpoint_meta(directory, DiffTalkModel.KIND)
        model = DiffTalkModel.from_pretrained(directory)
        extra = meta.get("extra", {})
        backend = extra.get("feature_backend")
        if backend is None:
            dims = {v: k for k, v in FEATURE_DIMS.items()}
            backend = dims.get(model.config.audio_encoder.feature_dim, "mel")
        if backend == "precomputed":
            raise ValueError(
                f"{directory} was trained on precomputed DeepSpeech features, which cannot be computed from "
                "new audio; train with data.feature_backend mel or whisper"
            )
        steps = int(extra.get("sampler_steps", 50))
        return cls(model, backend, steps, str(directory), device=device, dtype=dtype)

    def optimize(self, channels_last: bool = True, compile_unet: bool = False) -> DiffTalkPipeline:
        """Speed switches for GPUs: channels-last memory layout and ``torch.compile`` of the UNet.

        ``torch.compile`` pays off for long videos (compilation takes tens of seconds once); it is
        skipped with a warning where no compiler toolchain is usable.
        """
        if channels_last:
            self.model.unet.to(memory_format=torch.channels_last)
        if compile_unet:
            self.model.unet = torch.compile(self.model.unet, dynamic=False)
        return self

    # ---------------------------------------------------------------------------------------------

    def set_reference(self, reference: str | Path, options: GenerateOptions | None = None) -> ReferenceTrack:
        """Analyse the reference video or photo once; later :meth:`generate` calls reuse it."""
        options = options or GenerateOptions()
        self.reference = analyze_reference(
            reference, FPS, landmarks=options.landmarks, max_side=options.max_side, progress=options.progress
        )
        self._reference_options = options
        return self.reference

    def __call__(
        self, reference: str | Path, audio: str | Path | np.ndarray, output: str | Path, **options: Any
    ) -> GenerationResult:
        """``set_reference(reference)`` then ``generate(audio, output)``; keyword options as in GenerateOptions."""
        opts = GenerateOptions(**options)
        self.set_reference(reference, opts)
        return self.generate(audio, output, opts)

    # ---------------------------------------------------------------------------------------------

    def _crop_inputs(self, frame: np.ndarray, track: ReferenceTrack, index: int) -> dict[str, Any]:
        size = self.model.config.autoencoder.image_size
        box = track.boxes[index]
        crop = crop_image(frame, box, size)
        points = frame_to_crop(track.landmarks[index], box, size)
        return {"crop": crop, "landmarks": points, "mask": mouth_mask(points, size), "box": box}

    @torch.no_grad()
    def _generate_batch(
        self,
        items: list[dict[str, Any]],
        references: list[np.ndarray],
        audio_windows: np.ndarray,
        steps: int,
        options: GenerateOptions,
        generator: torch.Generator,
    ) -> list[np.ndarray]:
        """Masked-z_T DDIM for a batch of frames; returns uint8 crops."""
        model, size = self.model, self.model.config.autoencoder.image_size
        device, dtype = self.device, self.dtype
        crops = to_tensor(np.stack([it["crop"] for it in items])).to(device, dtype)
        masks = torch.from_numpy(np.stack([it["mask"] for it in items]))[:, None].to(device, dtype)
        conditions = model.prepare_conditions(
            audio_features=torch.from_numpy(audio_windows).to(device, dtype),
            landmarks=torch.from_numpy(np.stack([condition_landmarks(it["landmarks"], size) for it in items])).to(
                device, dtype
            ),
            reference_frames=to_tensor(np.stack(references)).to(device, dtype),
            masked_frames=apply_mask(crops, masks),
        )
        known = model.encode_frames(crops)
        latents = sample_ddim(
            model.make_denoiser(conditions),
            randn(tuple(known.shape), generator, device, dtype),
            alphas_cumprod=model.alphas_cumprod,
            num_steps=steps,
            eta=options.eta,
            mouth_mask=latent_mask(masks, known.shape[-1]),
            known_latents=known,
            generator=generator,
        )
        return list(to_uint8(model.decode_latents(latents)))

    def generate(
        self, audio: str | Path | np.ndarray, output: str | Path, options: GenerateOptions | None = None
    ) -> GenerationResult:
        """Drive the reference set by :meth:`set_reference` with ``audio`` and write ``output`` (MP4).

        Args:
            audio: a file in any common format/rate/channel count, or 16 kHz mono float32 samples.
            output: the ``.mp4`` to write (atomically: no partial file on failure).
            options: see :class:`GenerateOptions`.
        """
        if self.reference is None:
            raise ValueError("call set_reference(video_or_photo) before generate(audio, output)")
        options = options or self._reference_options or GenerateOptions()
        start = time.perf_counter()
        track = self.reference
        samples = load_audio(audio) if not isinstance(audio, np.ndarray) else audio.astype(np.float32)
        if options.length == "audio" or track.is_image:
            num_frames = max(1, round(len(samples) / SAMPLE_RATE * FPS))
        else:
            num_frames = track.num_frames
        samples = fit_length(samples, round(num_frames / FPS * SAMPLE_RATE))
        features = compute_features(samples, num_frames, backend=self.feature_backend, fps=FPS)  # type: ignore[arg-type]
        silence = compute_features(np.zeros(SAMPLE_RATE, np.float32), 1, backend=self.feature_backend)[0]  # type: ignore[arg-type]
        features[silent_frames(samples, num_frames, options.silence_db)] = silence
        index_of = source_indices(track.num_frames, num_frames, options.loop)
        steps = options.num_steps or self.default_steps
        context = self.model.config.audio_encoder.context_frames
        half = context // 2
        generator = torch.Generator().manual_seed(options.seed)
        frames = ReferenceFrames(track, FPS)
        size = self.model.config.autoencoder.image_size
        first_ref = int(np.clip(options.reference_frame, 0, track.num_frames - 1))
        if not track.found[first_ref]:
            first_ref = int(np.flatnonzero(track.found)[0])
        fixed_reference = self._crop_inputs(frames[first_ref], track, first_ref)["crop"]

        from difftalk.io.watermark import embed_watermark, provenance_tags

        metadata = provenance_tags(
            self.model_name,
            {"reference": track.path.name, "steps": steps, "seed": options.seed},
            payload=WATERMARK_PAYLOAD if options.watermark else None,
        )
        lanes, chunk = options.lanes, options.chunk
        span = lanes * chunk
        previous: list[np.ndarray | None] = [None] * lanes
        generated_count = 0
        smoother = _TemporalBlend(options.temporal_smoothing)
        bar = tqdm(total=num_frames, desc="generate", unit="frame", disable=not options.progress)
        with VideoWriter(output, fps=FPS, audio=samples, crf=options.crf, metadata=metadata) as writer:

            def emit(t: int, crop: np.ndarray | None, weight: np.ndarray | None, box: np.ndarray | None) -> None:
                frame = frames[int(index_of[t])]
                if crop is not None and weight is not None and box is not None:
                    frame = paste_back(frame, crop, box, weight)
                if options.watermark:
                    frame = embed_watermark(frame, WATERMARK_PAYLOAD)
                writer.write(frame)
                bar.update()

            for base in range(0, num_frames, span):
                results: dict[int, Entry] = {}
                for j in range(chunk):
                    batch_t = [base + k * chunk + j for k in range(lanes) if base + k * chunk + j < num_frames]
                    todo, lane_of, refs = [], [], []
                    for t in batch_t:
                        source = int(index_of[t])
                        lane = (t - base) // chunk
                        if not track.found[source]:
                            previous[lane] = None  # the next face starts again from the fixed reference
                            continue
                        item = self._crop_inputs(frames[source], track, source)
                        item["t"] = t
                        todo.append(item)
                        lane_of.append(lane)
                        ref = previous[lane] if options.progressive_reference else None
                        refs.append(ref if ref is not None else fixed_reference)
                    if not todo:
                        continue
                    times = np.array([it["t"] for it in todo])[:, None]
                    window = np.clip(times + np.arange(-half, context - half), 0, num_frames - 1)
                    windows = features[window].astype(np.float32)
                    crops = self._generate_batch(todo, refs, windows, steps, options, generator)
                    for item, lane, crop in zip(todo, lane_of, crops, strict=True):
                        results[item["t"]] = (crop, feathered_mask(item["mask"], options.feather * size), item["box"])
                        previous[lane] = crop
                # Chain the lanes: lane 0 of the next super-chunk continues from this chunk's last frame.
                last = min(base + span, num_frames) - 1
                previous = [results[last][0] if last in results else None] + [None] * (lanes - 1)
                for t in range(base, min(base + span, num_frames)):
                    entry = results.get(t)
                    for ready in smoother.push(t, entry):
                        emit(*ready)
                        generated_count += ready[1] is not None
            for ready in smoother.flush():
                emit(*ready)
                generated_count += ready[1] is not None
        bar.close()
        seconds = time.perf_counter() - start
        logger.info(
            "wrote %s: %d frames (%.2f s), %d generated, %.2f frames/s",
            output,
            num_frames,
            num_frames / FPS,
            generated_count,
            num_frames / seconds,
        )
        return GenerationResult(Path(output), num_frames, num_frames / FPS, generated_count, seconds)


Entry = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(generated crop, paste-back weight, crop box) of one frame."""
Ready = tuple[int, "np.ndarray | None", "np.ndarray | None", "np.ndarray | None"]


class _TemporalBlend:
    """Frame interpolation with a one-frame delay: ``crop_t ← (1 − 2a) crop_t + a (crop_{t−1} + crop_{t+1})``
    when both neighbours were generated (a frame next to a faceless one is left as is)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self._previous: tuple[int, Entry | None] | None = None
        self._current: tuple[int, Entry | None] | None = None

    def _blend(
        self, before: tuple[int, Entry | None] | None, current: tuple[int, Entry | None], after: Entry | None
    ) -> Ready:
        t, entry = current
        if entry is None:
            return t, None, None, None
        crop, weight, box = entry
        if self.weight > 0 and before is not None and before[1] is not None and after is not None:
            mixed = (1 - 2 * self.weight) * crop.astype(np.float32) + self.weight * (
                before[1][0].astype(np.float32) + after[0].astype(np.float32)
            )
            crop = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return t, crop, weight, box

    def push(self, t: int, entry: Entry | None) -> list[Ready]:
        """Add frame t; returns the frame before it, now that its right neighbour is known."""
        ready = []
        if self._current is not None:
            ready.append(self._blend(self._previous, self._current, entry))
            self._previous = self._current
        self._current = (t, entry)
        return ready

    def flush(self) -> list[Ready]:
        """The last frame (it has no right neighbour)."""
        ready = [self._blend(self._previous, self._current, None)] if self._current is not None else []
        self._previous = self._current = None
        return ready
