"""DiffTalkPipeline: a source video (dubbing) or photo (animation) + speech → a lip-synced, watermarked MP4 (stage ⑥).

Per output frame t (25 fps): the source frame it shows (looped or trimmed to the audio), its face
crop, the mouth mask of ``data.masks``, the masked crop, the mouth-free landmarks and the audio
windows of frames t-w … t+w become the conditions; masked-z_T DDIM regenerates only the mouth; the
previous generated frame is the next reference (progressive reference); neighbouring generated
mouths are blended (frame interpolation against jitter); the crop is pasted back softly into the
full frame; frames without a face pass through untouched. Frames are streamed in super-chunks of
``lanes × chunk`` frames, so memory does not grow with the length of the input.

"Set the source once, then drive it many times"::

    pipe = DiffTalkPipeline.from_pretrained("checkpoints/demo")
    pipe.set_source("face.mp4")
    pipe.generate("speech1.wav", "out1.mp4")
    pipe.generate("speech2.wav", "out2.mp4")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from difftalk.data.masks import apply_mask, latent_mask
from difftalk.data.transforms import to_tensor, to_uint8
from difftalk.diffusion import DISTILLED_ONLY
from difftalk.diffusion.sampling import make_scheduler, randn, sample_masked
from difftalk.models.difftalk import DiffTalkConditions, DiffTalkModel
from difftalk.models.window_decode import Window, supports_window_decode
from difftalk.pipeline.base import (
    FPS,
    WATERMARK_PAYLOAD,
    Driving,
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
)
from difftalk.pipeline.colour import colour_correction
from difftalk.pipeline.options import GenerateOptions, check_num_steps
from difftalk.pipeline.paste import paste_weight
from difftalk.pipeline.source import SourceFrames
from difftalk.preprocess.audio_features import silent_frames
from difftalk.preprocess.crop import frame_to_crop
from difftalk.preprocess.landmarks import condition_landmarks

logger = logging.getLogger(__name__)

COLOUR_SIGMA = 0.1
"""Width of the colour-correction blur as a fraction of the crop size."""

WINDOW_MARGIN = 3
"""Latent cells decoded around the pasted window and discarded (``GenerateOptions.decode_window``): with 3 the
window's pixels were 53 dB from a full decode on 4 dataset crops with perturbed mouths (1 cell: 47 dB, 0: 36 dB)."""

SOURCE_CACHE_BUDGET_MB = 256.0
"""Memory the prepared source crops may take (per pipeline, on its device). Per frame: the two latents and
the colour correction, 216 KB at 128² in fp32 (a 256 MB budget holds 48 s of 25 fps video), 864 KB at 256²
(12 s); half that in bf16/fp16. Frames past the budget are prepared every time, as without a cache."""


class SourceCache:
    """What generation computes from a source frame alone, by source frame index, computed once.

    A source frame's crop does not depend on the audio, and neither do its latent z₀, its masked latent
    z_masked and its colour correction (``pipeline.colour``: the autoencoder's reconstruction error of the
    crop, filled into the mouth). A photo is prepared once for the whole video, a looped video once per
    frame for every loop and every later ``generate`` call — MuseTalk's "prepared avatar", without a
    separate preparation step — which leaves the UNet and one decode per generated frame. Entries are kept
    until the budget is full (no eviction, so a long loop cannot thrash) and dropped when the source or
    the settings they depend on change.
    """

    def __init__(self, budget_mb: float = SOURCE_CACHE_BUDGET_MB) -> None:
        self.budget_bytes = int(budget_mb * 2**20)
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._owner: object | None = None
        self._settings: tuple[Any, ...] = ()
        self._entries: dict[int, dict[str, torch.Tensor]] = {}

    def lookup(
        self,
        owner: object,
        settings: tuple[Any, ...],
        keys: list[int],
        prepare: Callable[[list[int]], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """The named tensors of frames ``keys`` of source ``owner`` (an object, kept alive while it is the
        owner) prepared with ``settings`` (compared by value), each stacked over ``keys``: kept frames reused,
        the others made in one batch by ``prepare(rows)`` (the rows of ``keys`` to prepare → named tensors
        with one row each) and kept while the budget allows."""
        if owner is not self._owner or settings != self._settings:
            self._owner, self._settings, self._entries, self.used_bytes = owner, settings, {}, 0
        missing = [i for i, key in enumerate(keys) if key not in self._entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, dict[str, torch.Tensor]] = {}
        if missing:
            made = prepare(missing)
            fresh = {row: {name: value[n] for name, value in made.items()} for n, row in enumerate(missing)}
        for row, entry in fresh.items():
            size = sum(value.numel() * value.element_size() for value in entry.values())
            if keys[row] not in self._entries and self.used_bytes + size <= self.budget_bytes:
                self._entries[keys[row]] = entry
                self.used_bytes += size
        rows = [fresh[i] if i in fresh else self._entries[key] for i, key in enumerate(keys)]
        return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}


PixelBox = tuple[int, int, int, int]
"""``(top, bottom, left, right)`` pixels of a crop, end-exclusive."""


def union_box(boxes: list[PixelBox | None]) -> PixelBox | None:
    """The smallest pixel box holding every given box (None: none given)."""
    given = [box for box in boxes if box is not None]
    if not given:
        return None
    return min(b[0] for b in given), max(b[1] for b in given), min(b[2] for b in given), max(b[3] for b in given)


def mask_box(weight: np.ndarray) -> PixelBox | None:
    """The pixel box of a crop ``(S, S)`` where ``weight`` > 0 (None: nowhere)."""
    rows, cols = np.flatnonzero((weight > 0).any(axis=1)), np.flatnonzero((weight > 0).any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def pixel_window(box: PixelBox, crop_size: int, latent_size: int) -> Window:
    """The latent cells ``(row0, row1, col0, col1)`` (end-exclusive) that cover the pixel ``box`` of a
    ``crop_size`` crop whose latent map is ``latent_size`` a side."""
    factor = crop_size / latent_size
    top, bottom, left, right = box
    return (
        int(top // factor),
        min(latent_size, int(np.ceil(bottom / factor))),
        int(left // factor),
        min(latent_size, int(np.ceil(right / factor))),
    )


__all__ = ["FPS", "WATERMARK_PAYLOAD", "DiffTalkPipeline", "GenerationResult", "silent_frames"]


class DiffTalkPipeline(TalkingHeadPipeline):
    """Generate talking-head videos with a trained :class:`DiffTalkModel`."""

    method = "difftalk"

    def __init__(
        self,
        model: DiffTalkModel,
        feature_backend: str = "mel",
        default_steps: int = 50,
        model_name: str = "difftalk",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        default_sampler: str = "ddim",
        distilled: bool = False,
        sampler_settings: dict[str, Any] | None = None,
        audio_dropout: float = 0.0,
        audio_guidance: float = 1.0,
        learned_audio_guidance: float = 1.0,
    ) -> None:
        super().__init__(feature_backend, model.config.audio_encoder.feature_dim, model_name, device, dtype)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.default_steps = default_steps
        self.default_sampler = default_sampler
        self.distilled = distilled
        """A ``difftalk distill`` student (few-step sampling is what it was trained for)."""
        self.sampler_settings = dict(sampler_settings or {})
        """Scheduler constructor settings the checkpoint records (a student: ``original_inference_steps``)."""
        self.audio_dropout = audio_dropout
        """The share of null-audio samples the model was trained with (0: audio guidance has nothing to use)."""
        self.audio_guidance = audio_guidance
        """The checkpoint's recommended audio guidance (``GenerateOptions.audio_guidance`` None takes it)."""
        self.learned_audio_guidance = learned_audio_guidance
        """A student distilled from a guided teacher: the guidance it learned (its plain prediction is guided)."""
        self._checked: set[tuple[int | None, str]] = set()
        self._warned_guidance = False
        self.source_cache = SourceCache()
        """What the current source's frames give without the audio (see :class:`SourceCache`)."""

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> DiffTalkPipeline:
        """Load a checkpoint folder written by ``difftalk train`` (``<run>/checkpoints/model``)."""
        from difftalk.checkpoint import read_checkpoint_meta, resolve_checkpoint_dir

        local = resolve_checkpoint_dir(directory)  # a folder or a hub repo id, resolved once
        model = DiffTalkModel.from_pretrained(local)
        backend = feature_backend_of(local, DiffTalkModel.KIND, model.config.audio_encoder.feature_dim)
        extra = read_checkpoint_meta(local, DiffTalkModel.KIND).get("extra", {})
        return cls(
            model,
            backend,
            int(extra.get("sampler_steps", 50)),
            str(directory),
            device=device,
            dtype=dtype,
            default_sampler=str(extra.get("sampler", "ddim")),
            distilled=bool(extra.get("distilled", False)),
            sampler_settings=dict(extra.get("sampler_settings", {})),
            audio_dropout=float(extra.get("audio_dropout", 0.0)),
            audio_guidance=float(extra.get("audio_guidance", 1.0)),
            learned_audio_guidance=float(extra.get("teacher", {}).get("audio_guidance", 1.0)),
        )

    def optimize(self, channels_last: bool = True, compile_unet: bool = False) -> DiffTalkPipeline:
        """Speed switches for GPUs: channels-last memory layout and ``torch.compile`` of the UNet.

        ``torch.compile`` pays off for long videos (compilation takes tens of seconds once).
        """
        if channels_last:
            self.model.unet.to(memory_format=torch.channels_last)
        if compile_unet:
            self.model.unet = torch.compile(self.model.unet, dynamic=False)
        return self

    def audio_guidance_of(self, options: GenerateOptions) -> float:
        """The audio guidance a run uses: ``options.audio_guidance``, else the checkpoint's; warns (once) when a
        model that never saw the null audio in training is guided."""
        scale = self.audio_guidance if options.audio_guidance is None else options.audio_guidance
        if scale != 1.0 and self.learned_audio_guidance != 1.0 and not self._warned_guidance:
            self._warned_guidance = True
            logger.warning(
                "audio guidance %.2f on %s, a student that already learned its teacher's audio guidance %.2f: "
                "guiding it again stacks the two and its null-audio prediction is untrained; use --audio-guidance 1",
                scale,
                self.model_name,
                self.learned_audio_guidance,
            )
        elif scale != 1.0 and self.audio_dropout <= 0 and not self._warned_guidance:
            self._warned_guidance = True
            logger.warning(
                "audio guidance %.2f on %s, which was not trained with train.audio_dropout: its null-audio "
                "prediction is untrained and the result is unreliable; fine-tune it with "
                "--set train.audio_dropout=0.2 or use --audio-guidance 1",
                scale,
                self.model_name,
            )
        return scale

    def sampler_of(self, options: GenerateOptions) -> str:
        """The sampler a run uses: ``options.sampler``, else the checkpoint's."""
        return options.sampler or self.default_sampler

    def check_steps(self, steps: int | None, sampler: str | None = None) -> None:
        """Refuse < 1 steps; warn (once per pipeline and value) below the checkpoint's recommended count, and
        about a sampler that does not fit the checkpoint (``lcm`` on a model that was not distilled, or the
        other way round)."""
        sampler = sampler or self.default_sampler
        if (steps, sampler) in self._checked:
            return
        check_num_steps(steps, self.default_steps, self.distilled)
        if steps is not None and steps > 1 and self.sampler_settings.get("prediction_type") == "sample":
            logger.warning(
                "%d steps on %s, a one-step student (distill.method=direct): it learned its teacher's sample in one "
                "step from pure noise and never saw a partly denoised mouth; leave --steps out (1)",
                steps,
                self.model_name,
            )
        if (sampler in DISTILLED_ONLY) != self.distilled:
            logger.warning(
                "sampler %r on %s: %s; use --sampler %s (or leave --sampler out)",
                sampler,
                "a distilled student" if self.distilled else "a model that was not distilled",
                "a student is sampled by the rule it was distilled for"
                if self.distilled
                else f"{sampler} needs a `difftalk distill` student",
                self.default_sampler,
            )
        self._checked.add((steps, sampler))

    def make_scheduler(self, options: GenerateOptions) -> Any:
        """A fresh diffusers scheduler for one sampling call (they keep per-run state)."""
        sampler = self.sampler_of(options)
        settings = self.sampler_settings if sampler == self.default_sampler else {}
        if "prediction_type" in self.sampler_settings:  # what the network predicts holds for every sampler
            settings = {**settings, "prediction_type": self.sampler_settings["prediction_type"]}
        return make_scheduler(sampler, self.model.alphas_cumprod, **settings)

    def provenance(self, options: GenerateOptions) -> dict[str, Any]:
        steps = options.num_steps or self.default_steps
        return {**super().provenance(options), "steps": steps, "sampler": self.sampler_of(options)}

    @torch.no_grad()
    def _generate_batch(
        self,
        items: list[FaceCrop],
        sources: list[int],
        references: torch.Tensor,
        audio_windows: np.ndarray,
        steps: int,
        options: GenerateOptions,
        generator: torch.Generator,
        reference_residual: torch.Tensor | None = None,
        needed: PixelBox | None = None,
        norm_stats: torch.Tensor | None = None,
    ) -> tuple[list[np.ndarray], torch.Tensor]:
        """Masked-z_T sampling (``options.sampler``) for a batch of frames.

        Returns (uint8 crops, the next references ``(B, C, h, w)``).

        ``sources``: the source frame index of each item (what its crop gives without the audio is computed
        once per source frame, :class:`SourceCache`).

        ``references``: ``(B, C, h, w)`` reference latents (the fixed reference's, or what the previous frame
        passed on). The next references follow ``options.reference_update`` (``composite``: the encoded real
        crop with the generated mouth region pasted in; ``latent``: the generated latent); they are only
        computed with ``options.progressive_reference`` (else the sampled latents are returned).
        ``options.noise == "shared"``: every frame gets the same z_T and the same re-noising draws (a
        generator seeded anew per batch); else all draws come from ``generator``, new for every frame.
        ``reference_residual``: ``(1, 3, S, S)`` the fixed reference crop minus its reconstruction, for the
        colour correction (``pipeline.colour``).
        ``needed``: the pixel box of the crops the output uses (where the items' and their blended neighbours'
        paste weights are > 0); with ``norm_stats`` (``(1, K, 2)``, the decoder's normalisation statistics of
        the fixed reference frame's decode) only the latent window around them (and the mouth mask, when the
        composite passes it on) is decoded, and the returned crops are the input crops outside it.
        """
        model, size = self.model, self.model.config.autoencoder.image_size
        device, dtype = self.device, self.dtype
        crops = to_tensor(np.stack([it.image for it in items])).to(device, dtype)
        masks = torch.from_numpy(np.stack([it.mask for it in items]))[:, None].to(device, dtype)
        landmarks = np.stack([condition_landmarks(it.landmarks, size) for it in items])
        track = self.track()
        keys = [0 if track.is_image else index for index in sources]  # a photo: one frame for every index
        pixel = model.config.masked_target == "pixel"

        def prepare(rows: list[int]) -> dict[str, torch.Tensor]:  # what these crops give without the audio
            latents = model.encode_frames(crops[rows])
            mouth = latent_mask(masks[rows], latents.shape[-1])
            masked = apply_mask(crops[rows], masks[rows]) if pixel else None
            prepared = {"known": latents, "masked": model.masked_target_latents(latents, mouth, masked)}
            if options.colour_fix:
                reconstructions = model.decode_latents(latents)
                prepared["colour"] = colour_correction(
                    crops[rows], reconstructions, masks[rows], COLOUR_SIGMA * size, reference_residual
                )
            return prepared

        settings = (options.reference_frame, options.colour_fix)  # (the colour fix reads the reference frame)
        prepared = self.source_cache.lookup(track, settings, keys, prepare)
        known = prepared["known"]
        mouth = latent_mask(masks, known.shape[-1])
        conditions = DiffTalkConditions(
            audio_features=torch.from_numpy(audio_windows).to(device, dtype),
            landmarks=torch.from_numpy(landmarks).to(device, dtype),
            reference_latents=references.to(device, dtype),
            masked_latents=prepared["masked"],
        )
        shared = options.noise == "shared"
        if shared:  # the same draws for every batch: a generator seeded anew, one draw broadcast over frames
            generator = torch.Generator().manual_seed(options.seed)
        noise = randn((1, *known.shape[1:]) if shared else tuple(known.shape), generator, device, dtype)
        latents = sample_masked(
            model.make_denoiser(
                conditions,
                audio_guidance=self.audio_guidance_of(options),
                mouth_mask=mouth,
                prediction=self.sampler_settings.get("prediction_type", "epsilon"),
            ),
            noise.expand_as(known),
            scheduler=self.make_scheduler(options),
            num_steps=steps,
            eta=options.eta,
            mouth_mask=mouth,
            known_latents=known,
            generator=generator,
            shared_noise=shared,
        )
        composite = options.progressive_reference and options.reference_update == "composite"
        window: Window | None = None
        if needed is not None and norm_stats is not None:
            box = union_box([needed, *(mask_box(item.mask) for item in items if composite)])
            window = None if box is None else pixel_window(box, size, latents.shape[-1])
        if window is not None and norm_stats is not None:
            factor = size // latents.shape[-1]
            rows = slice(window[0] * factor, window[1] * factor)
            cols = slice(window[2] * factor, window[3] * factor)
            stats = norm_stats.expand(latents.shape[0], -1, -1)
            pixels = model.decode_latents_window(latents, stats, window, WINDOW_MARGIN)
            if options.colour_fix:
                pixels = (pixels + prepared["colour"][:, :, rows, cols]).clamp(-1, 1)
            generated = crops.clone()
            generated[:, :, rows, cols] = pixels.to(generated.dtype)
        else:
            generated = model.decode_latents(latents)
            if options.colour_fix:
                generated = (generated + prepared["colour"]).clamp(-1, 1)
        if composite:
            latents = model.encode_frames(crops * (1 - masks) + generated * masks)
        return list(to_uint8(generated)), latents

    def iter_frames(self, driving: Driving, options: GenerateOptions) -> Iterator[OutputFrame]:
        """Frames in super-chunks of ``lanes × chunk``: lane k generates its ``chunk`` consecutive frames one
        after the other (progressive reference within the lane); the lanes run as one batch.

        Progressive reference: a frame's reference is what the frame before it in its lane passed on
        (``options.reference_update``: the real crop with the generated mouth pasted in, encoded; or the
        generated latent), so nothing outside the mouth drifts along the chain. Across
        super-chunks lane 0 continues from the frame just before it and lanes 1+ continue their own chains;
        a frame without a face (or ``progressive_reference=False``) falls back to the fixed reference. A last
        super-chunk shorter than ``lanes × chunk`` is shared evenly between the lanes (full batches), and with
        several lanes a super-chunk's crops are read in order first, so the source streams forwards.

        Frames are yielded as soon as they and every frame before them are made (with one lane: each frame
        right after its own sampling), so the first frame does not wait for a whole chunk."""
        track = self.track()
        size = self.model.config.autoencoder.image_size
        context = self.model.config.audio_encoder.context_frames
        steps = options.num_steps or self.default_steps
        self.check_steps(options.num_steps, options.sampler)
        generator = torch.Generator().manual_seed(options.seed)
        frames = SourceFrames(track, FPS)
        first = first_reference(track, options.reference_frame)
        fixed_reference = crop_inputs(frames[first], track, first, size).image
        reference_image = to_tensor(fixed_reference[None]).to(self.device, self.dtype)
        fixed_latent = self.model.encode_frames(reference_image)[0]
        # the reference minus its reconstruction, for the colour correction (from the latent just encoded)
        windowed = options.decode_window and supports_window_decode(self.model.autoencoder)
        if windowed:  # the decoder's normalisation of the window: the reference frame's (module docstring)
            reconstruction, norm_stats = self.model.decode_latents_recording_norms(fixed_latent[None])
        else:
            reconstruction, norm_stats = self.model.decode_latents(fixed_latent[None]), None
        residual = reference_image - reconstruction if options.colour_fix else None
        lanes = options.lanes
        span = lanes * options.chunk
        previous: list[torch.Tensor | None] = [None] * lanes
        smoother = TemporalBlend(options.temporal_smoothing)
        supports: dict[int, PixelBox | None] = {}  # by source frame: where its paste weight is > 0
        ahead: dict[int, np.ndarray] = {}  # paste weights made for a neighbour's window, not yet used

        def weight_of(source: int) -> np.ndarray:
            weight = ahead.pop(source, None)
            if weight is None:
                points = frame_to_crop(track.landmarks[source], track.boxes[source], size)
                weight = paste_weight(points, size, options.feather)
                supports[source] = mask_box(weight)
            return weight

        def box_at(t: int) -> PixelBox | None:
            if t < 0 or not driving.has_frame(t) or not track.found[source := driving.source(t)]:
                return None
            if source not in supports:
                ahead[source] = weight_of(source)
            return supports[source]

        base = 0
        while driving.has_frame(base):
            chunk = options.chunk
            ahead_crops: dict[int, FaceCrop] = {}
            if lanes > 1:
                # a last, shorter super-chunk is shared evenly between the lanes (full batches, fewer of them)
                chunk = min(chunk, -(-sum(driving.has_frame(t) for t in range(base, base + span)) // lanes))
                # its crops in order: the source is read forwards, not at every lane's place in turn
                for t in range(base, base + lanes * chunk):
                    if driving.has_frame(t) and track.found[source := driving.source(t)]:
                        ahead_crops[t] = crop_inputs(frames[source], track, source, size)
            end = base + lanes * chunk  # (the last super-chunk: then no later chunk needs its last latent)
            results: dict[int, GeneratedMouth] = {}
            done: set[int] = set()
            cursor = base  # frames before it were handed on, in order, as soon as they and all before were done
            last_latent: torch.Tensor | None = None
            for j in range(chunk):
                todo: list[FaceCrop] = []
                times, sources, lane_of, refs = [], [], [], []
                for lane in range(lanes):
                    t = base + lane * chunk + j
                    if not driving.has_frame(t):
                        continue
                    done.add(t)
                    source = driving.source(t)
                    if not track.found[source]:
                        previous[lane] = None  # the next face starts again from the fixed reference
                        continue
                    crop = ahead_crops.pop(t, None)
                    todo.append(crop if crop is not None else crop_inputs(frames[source], track, source, size))
                    times.append(t)
                    sources.append(source)
                    lane_of.append(lane)
                    reference = previous[lane] if options.progressive_reference else None
                    refs.append(reference if reference is not None else fixed_latent)
                if todo:
                    windows = driving.windows(np.array(times), context)
                    weights = [weight_of(source) for source in sources]
                    needed = None
                    if norm_stats is not None:  # a crop is blended into its neighbours' mouths: right on theirs too
                        reach = (-1, 0, 1) if options.temporal_smoothing > 0 else (0,)
                        needed = union_box([box_at(t + d) for t in times for d in reach])
                    crops, latents = self._generate_batch(
                        todo,
                        sources,
                        torch.stack(refs),
                        windows,
                        steps,
                        options,
                        generator,
                        residual,
                        needed,
                        norm_stats,
                    )
                    for item, t, lane, crop, latent, weight in zip(
                        todo, times, lane_of, crops, latents, weights, strict=True
                    ):
                        results[t] = GeneratedMouth(crop, weight, item.box)
                        previous[lane] = latent
                        if t == end - 1:
                            last_latent = latent
                # lane 0's frames are done in order: hand them on now, not when the whole super-chunk is done
                while cursor < end and cursor in done:
                    for ready in smoother.push(cursor, results.pop(cursor, None)):
                        yield compose_frame(frames, driving, ready)
                    cursor += 1
            # lane 0 of the next super-chunk continues from this one's last frame; the others keep their chains
            previous[0] = last_latent
            base = end
            driving.release(base, context)
        for ready in smoother.flush():
            yield compose_frame(frames, driving, ready)
