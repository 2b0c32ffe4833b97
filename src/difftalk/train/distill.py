"""``difftalk distill``: few-step students of a trained DiffTalk model.

Two methods (``distill.method``). ``direct`` (knowledge distillation, Luhman & Luhman 2021): the student's one
LCM step from z_T learns the teacher's whole ``teacher_steps``-step DDIM sample from the same z_T (and the same
re-noising draws), both run by the project's masked sampler, so the one-step student reproduces the teacher's
default sampling — audio guidance included — at one UNet pass; the loss is :func:`masked_huber` of the two
sampled latents. The direct student predicts z_0 itself (``prediction_type="sample"``, recorded in its
``sampler_settings``): through an ε-prediction at t = T, z_0 = (z_T − sqrt(1 − ᾱ_T)·ε̂)/sqrt(ᾱ_T) multiplies the
network's error by 1/sqrt(ᾱ_T) (84 for the LDM schedule), so bf16 rounding of ε̂ alone would cost ≈0.2 of a
unit-variance latent. ``lcm``, latent consistency distillation (LCM, Luo et al. 2023), is described below.

The student, a copy of the teacher (same config, initialised from its weights), learns the consistency
function f_θ(x_t, t) ≈ x_0 of the teacher's probability-flow ODE, so that diffusers' ``LCMScheduler`` samples
it in 1, 2 or 4 steps. Notation (LCM §4.2, Alg. 1), with T training timesteps and N =
``original_inference_steps``:

* the grid t_i = (i + 1)·(T // N) − 1, i < N (``LCMScheduler.set_timesteps``' ``lcm_origin_timesteps``);
  t_{n+k} is drawn uniformly on it and t_n = max(t_{n+k} − k, 0), k = ``skip``;
* x_{t_{n+k}} = sqrt(ᾱ) x_0 + sqrt(1 − ᾱ) ε from the clean target latents x_0 (exactly as ``difftalk train``
  gets them, with the same conditions);
* the frozen teacher takes one DDIM step (ODE, η = 0) with its ε̂: x̂_0 = (x_{t_{n+k}} − sqrt(1 − ᾱ_{t_{n+k}}) ε̂)
  / sqrt(ᾱ_{t_{n+k}}), x̂_{t_n} = sqrt(ᾱ_{t_n}) x̂_0 + sqrt(1 − ᾱ_{t_n}) ε̂, where ε̂ is the teacher's audio-guided
  prediction when ``teacher_audio_guidance`` ≠ 1 (a fixed scale, LCM's guided distillation without the
  w-embedding; the paper's DiffTalk has no guidance);
* outside the mouth mask the latents are known, as in masked inference: x̂_{t_n} there is the known latent
  noised to t_n with the *same* ε that made x_{t_{n+k}} (a deterministic choice: inference re-noises with
  fresh noise, but the network only ever sees known noised latents outside the mask either way);
* f(x, t) = c_skip(t)·x + c_out(t)·x̂_0(ε̂(x, t)) with LCMScheduler's boundary condition
  (``get_scalings_for_boundary_condition_discrete``): s = 10·t (t the discrete timestep itself, no
  rescaling), c_skip = σ²/(s² + σ²), c_out = s/sqrt(s² + σ²), σ = σ_data = 0.5; so f(x, 0) = x;
* loss = pseudo-Huber sqrt((f_θ(x_{t_{n+k}}, t_{n+k}) − f_EMA(x̂_{t_n}, t_n))² + c²) − c, averaged per
  sample with weight 1 inside the dilated mouth mask and ``mask_loss_outside`` outside (as the diffusion
  recipe weights its ε-MSE); the target network f_EMA is an EMA of the student (``train.ema.EMA``).

Run folder as every trainer's (``train.loop.fit``: exact resume, SIGTERM checkpoints); ``checkpoints/model``
is the student (``DiffTalkModel.from_pretrained``), whose ``config.json`` records ``sampler="lcm"``,
``sampler_steps``, ``sampler_settings.original_inference_steps``, ``distilled=True`` and the teacher's weights
hash (``checkpoint.weights_sha256``). Resuming with another teacher is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from difftalk.checkpoint import read_checkpoint_meta, resolve_checkpoint_dir
from difftalk.config import DiffTalkConfig, DistillConfig, ModelConfig
from difftalk.data.batch import TalkingHeadBatch
from difftalk.data.transforms import to_uint8
from difftalk.diffusion.ddim import DenoiseFn, randn
from difftalk.diffusion.sampling import make_scheduler, sample_masked
from difftalk.diffusion.schedule import add_noise, predict_clean
from difftalk.io.image import save_image_grid
from difftalk.models.difftalk import DiffTalkModel, dilate_mask
from difftalk.models.unet_window import Prediction
from difftalk.train.diffusion import (
    SAMPLE_GRID_SIZE,
    _conditions,
    _fixed_batch,
    _targets,
    open_checkpoint_model,
    training_batches,
)
from difftalk.train.ema import EMA
from difftalk.train.loop import (
    Every,
    StepOutput,
    TrainableWeights,
    TrainingState,
    fit,
    linear_warmup,
    open_run,
)

logger = logging.getLogger(__name__)

SIGMA_DATA = 0.5
"""σ_data of LCMScheduler's boundary condition."""
TIMESTEP_SCALING = 10.0
"""LCMScheduler's ``timestep_scaling`` default: the discrete timestep is multiplied by it in c_skip / c_out."""
MODEL_DIR = "model"


# -------------------------------------------------------------------------------------------------
# The consistency parametrisation and loss
# -------------------------------------------------------------------------------------------------


def lcm_grid(num_train_timesteps: int, original_inference_steps: int) -> torch.Tensor:
    """Ascending ``(N,)`` long: t_i = (i + 1)·(T // N) − 1, the grid ``LCMScheduler`` samples a subset of."""
    if not 1 <= original_inference_steps <= num_train_timesteps:
        raise ValueError(f"original_inference_steps must be in [1, {num_train_timesteps}]")
    spacing = num_train_timesteps // original_inference_steps
    return torch.arange(1, original_inference_steps + 1, dtype=torch.long) * spacing - 1


def boundary_scalings(timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) ``(B,)`` float64 of discrete ``timesteps``, as LCMScheduler computes them."""
    scaled = timesteps.double() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def consistency_function(
    latents: torch.Tensor, noise_pred: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """f(x_t, t) = c_skip(t)·x_t + c_out(t)·x̂_0: ``LCMScheduler.step``'s ``denoised`` for ε-prediction.

    Args:
        latents: ``(B, C, h, w)`` x_t.
        noise_pred: ε̂(x_t, t), same shape.
        timesteps: ``(B,)`` long discrete t.
        alphas_cumprod: ``(T,)`` ᾱ.
    """
    c_skip, c_out = (c.to(latents.device, latents.dtype).view(-1, 1, 1, 1) for c in boundary_scalings(timesteps))
    clean = predict_clean(latents, noise_pred.to(latents.dtype), timesteps, alphas_cumprod)
    return c_skip * latents + c_out * clean


@dataclass
class ConsistencyLossOutput:
    """Result of :func:`consistency_loss`."""

    loss: torch.Tensor
    """Scalar weighted pseudo-Huber distance."""
    timesteps: torch.Tensor
    """``(B,)`` t_{n+k}, where the student is evaluated."""
    target_timesteps: torch.Tensor
    """``(B,)`` t_n, where the target network is evaluated."""


def consistency_loss(
    student: DenoiseFn,
    teacher: DenoiseFn,
    target: DenoiseFn,
    *,
    clean: torch.Tensor,
    mouth_mask: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    settings: DistillConfig,
    generator: torch.Generator | None = None,
) -> ConsistencyLossOutput:
    """The latent consistency distillation loss of one batch (see the module docstring).

    Args:
        student: ε̂ of the student (with gradients).
        teacher: ε̂ of the frozen teacher.
        target: ε̂ of the target network (the student's EMA).
        clean: ``(B, C, h, w)`` x_0, the target frames' diffusion latents.
        mouth_mask: ``(B, 1, h, w)`` latent mouth mask, 1 = generated at inference.
        alphas_cumprod: ``(T,)`` ᾱ of the training schedule.
        settings: ``original_inference_steps``, ``skip``, ``huber_c``, ``mask_loss_outside``, ``mask_loss_dilate``.
        generator: source of t_{n+k} and ε.
    """
    batch = clean.shape[0]
    grid = lcm_grid(int(alphas_cumprod.shape[0]), settings.original_inference_steps)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    index = torch.randint(0, grid.numel(), (batch,), generator=generator, device=gen_device).cpu()
    start = grid[index].to(clean.device)
    end = (start - settings.skip).clamp(min=0)
    noise = randn(tuple(clean.shape), generator, clean.device, clean.dtype)
    noisy = add_noise(clean, noise, start, alphas_cumprod)
    mask = mouth_mask.to(clean.dtype)
    with torch.no_grad():
        teacher_noise = teacher(noisy, start).to(clean.dtype)
        teacher_clean = predict_clean(noisy, teacher_noise, start, alphas_cumprod)
        previous = add_noise(teacher_clean, teacher_noise, end, alphas_cumprod)  # DDIM, η = 0
        previous = mask * previous + (1 - mask) * add_noise(clean, noise, end, alphas_cumprod)
        wanted = consistency_function(previous, target(previous, end), end, alphas_cumprod).float()
    predicted = consistency_function(noisy, student(noisy, start), start, alphas_cumprod).float()
    return ConsistencyLossOutput(masked_huber(predicted, wanted, mask, settings), start, end)


def masked_huber(
    predicted: torch.Tensor, wanted: torch.Tensor, mouth_mask: torch.Tensor, settings: DistillConfig
) -> torch.Tensor:
    """Scalar pseudo-Huber distance sqrt(d² + c²) − c of ``(B, C, h, w)`` latents, averaged per sample with
    weight 1 inside the mouth mask ``(B, 1, h, w)`` grown by ``mask_loss_dilate`` and ``mask_loss_outside``
    outside it."""
    c = settings.huber_c
    distance = ((predicted - wanted).square() + c**2).sqrt() - c
    grown = dilate_mask(mouth_mask.float(), settings.mask_loss_dilate)
    spatial = grown + settings.mask_loss_outside * (1 - grown)
    per_sample = (distance * spatial).sum(dim=(1, 2, 3)) / (spatial.sum(dim=(1, 2, 3)) * distance.shape[1])
    return per_sample.mean()


def direct_loss(
    student: DenoiseFn,
    teacher: DenoiseFn,
    *,
    clean: torch.Tensor,
    mouth_mask: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    settings: DistillConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Direct distillation of one batch: the student's one LCM step from z_T (its network predicting z_0) against
    the teacher's ``teacher_steps``-step DDIM sample (η = 0) from the same z_T, both by the project's masked sampler.

    Both samplers get generators in the same state, so the known latents outside the mask are re-noised with
    the same draw at T; only the mouth differs. Returns the scalar :func:`masked_huber` distance.

    Args:
        student: ẑ_0 of the student (with gradients).
        teacher: ε̂ of the frozen teacher (guided or not: the caller's closure).
        clean: ``(B, C, h, w)`` the target frames' diffusion latents (known outside the mouth).
        mouth_mask: ``(B, 1, h, w)`` latent mouth mask, 1 = generated.
        alphas_cumprod: ``(T,)`` ᾱ of the training schedule.
        settings: ``teacher_steps``, ``original_inference_steps`` and the loss fields.
        generator: source of z_T and of the re-noising draws.
    """
    noise = randn(tuple(clean.shape), generator, clean.device, clean.dtype)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
    mask = mouth_mask.to(clean.dtype)

    def run(denoise: DenoiseFn, sampler: str, steps: int, **overrides: Any) -> torch.Tensor:
        scheduler = make_scheduler(sampler, alphas_cumprod, **overrides)
        draws = torch.Generator(gen_device).manual_seed(seed)
        return sample_masked(
            denoise, noise, scheduler=scheduler, num_steps=steps, mouth_mask=mask, known_latents=clean, generator=draws
        ).float()

    with torch.no_grad():
        wanted = run(teacher, "ddim", settings.teacher_steps)
    lcm = student_sampler_settings(settings)
    predicted = run(student, "lcm", 1, **lcm)
    return masked_huber(predicted, wanted, mask, settings)


def student_sampler_settings(settings: DistillConfig) -> dict[str, Any]:
    """``LCMScheduler`` settings of the student (recorded as its ``sampler_settings``): the distillation's grid,
    and z_0-prediction for a ``direct`` student."""
    extra = {"prediction_type": "sample"} if settings.method == "direct" else {}
    return {"original_inference_steps": settings.original_inference_steps, **extra}


def student_prediction(settings: DistillConfig) -> Prediction:
    """What the student's network predicts (:func:`student_sampler_settings`' ``prediction_type``)."""
    return "sample" if student_sampler_settings(settings).get("prediction_type") == "sample" else "epsilon"


# -------------------------------------------------------------------------------------------------
# The trainer
# -------------------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    """Where a distillation run ended."""

    run_dir: Path
    step: int
    last_loss: float
    stopped_early: bool
    model_dir: Path
    """The student's checkpoint folder."""
    teacher_sha256: str


def _open_teacher(config: DiffTalkConfig) -> tuple[DiffTalkModel, str, float]:
    """The frozen teacher, the SHA-256 of its weights file and the audio guidance of its ODE.

    Raises:
        ValueError: no teacher given, its audio features differ from ``data.feature_backend``, or audio
            guidance is asked of a teacher that never saw the null audio.
    """
    source = config.distill.teacher
    if not source:
        raise ValueError("distill.teacher is empty: pass --teacher DIR (a `difftalk train` checkpoints/model folder)")
    teacher, sha256 = open_checkpoint_model(source, config.data.feature_backend, "the teacher")
    extra = read_checkpoint_meta(resolve_checkpoint_dir(source), DiffTalkModel.KIND).get("extra", {})
    guidance = config.distill.teacher_audio_guidance
    guidance = float(extra.get("audio_guidance", 1.0)) if guidance is None else guidance
    if guidance != 1.0 and float(extra.get("audio_dropout", 0.0)) <= 0:
        raise ValueError(
            f"distill.teacher_audio_guidance {guidance:g}: the teacher {source} was not trained with "
            "train.audio_dropout, so it has no null-audio prediction to guide with; set "
            "distill.teacher_audio_guidance=1 or fine-tune the teacher with --set train.audio_dropout=0.2"
        )
    if guidance != 1.0:
        logger.info("the student learns the teacher's audio-guided ODE (audio guidance %g)", guidance)
    return teacher.requires_grad_(False).eval(), sha256, guidance


def _check_teacher(resumed: Mapping[str, Any], sha256: str, config: DistillConfig, state_path: Path) -> None:
    """Refuse to resume a run that distilled another teacher."""
    started = resumed.get("teacher_sha256")
    if started != sha256:
        raise ValueError(
            f"{state_path} distils the teacher {resumed.get('teacher_path')!r} with weights sha256 {started}, but "
            f"{config.teacher!r} has {sha256}; resume with the teacher the run started with, or start a new run "
            "(another --run-dir, or --no-resume to overwrite this one)"
        )


def _copy_of(model: DiffTalkModel) -> DiffTalkModel:
    """A new model with ``model``'s config and weights."""
    copy = DiffTalkModel(model.config)
    copy.load_state_dict(model.state_dict(), strict=True)
    return copy


def _student_config(teacher: DiffTalkModel, settings: DistillConfig) -> ModelConfig:
    """The student's model config: the teacher's, with ``student_unet_window`` when set."""
    if settings.student_unet_window is None:
        return teacher.config
    return replace(teacher.config, unet_window=settings.student_unet_window)


def _initial_student(
    teacher: DiffTalkModel, settings: DistillConfig, feature_backend: str
) -> tuple[DiffTalkModel, str | None]:
    """The student's initial weights: the teacher's, or ``settings.init``'s (its architecture must be the
    teacher's; the UNet window may differ), in a model of :func:`_student_config`; and the SHA-256 of
    ``init``'s weights (None for the teacher)."""
    config = _student_config(teacher, settings)
    if not settings.init:
        source_model, sha256 = teacher, None
    else:
        source_model, sha256 = open_checkpoint_model(settings.init, feature_backend, "distill.init")
        if replace(source_model.config, unet_window=None) != replace(teacher.config, unet_window=None):
            raise ValueError(
                f"distill.init {settings.init} has another model config than the teacher; the student must have "
                "the teacher's architecture: pass a student of this teacher (or leave distill.init empty)"
            )
    student = DiffTalkModel(config)
    student.load_state_dict(source_model.state_dict(), strict=True)
    return student, sha256


def train_distill(config: DiffTalkConfig, resume: bool = True, progress: bool = True) -> DistillResult:
    """Distil ``config.distill.teacher`` into a few-step student on ``config.data``, driven by ``config.distill``
    (``resume``, ``progress``: see :mod:`difftalk.train`). The run's ``model`` section becomes the teacher's.

    Raises:
        ValueError: no teacher, a feature backend other than the teacher's, or a resumed run of another teacher.
        FloatingPointError: the loss is not finite.
    """
    teacher, teacher_sha256, guidance = _open_teacher(config)
    config = replace(config, model=teacher.config)
    settings = config.distill
    fabric, run = open_run(settings)
    rank, world = fabric.global_rank, fabric.world_size
    student, init_sha256 = _initial_student(teacher, settings, config.data.feature_backend)
    student.train()  # a new model: all trainable but the frozen autoencoder
    target = _copy_of(student).requires_grad_(False).eval()  # (its weights: the EMA, copied in every step)
    teacher.to(fabric.device)
    target.to(fabric.device)
    torch.manual_seed(settings.seed + rank)

    batches = training_batches(
        fabric, config, teacher.autoencoder, settings.seed, settings.batch_size, settings.latent_cache, progress
    )
    optimizer = torch.optim.AdamW(
        student.trainable_parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    fabric_student, optimizer = fabric.setup(student, optimizer)
    fabric_student.mark_forward_method("predict_noise")
    trainable = [p for p in student.parameters() if p.requires_grad]
    ema = EMA([(n, p) for n, p in student.named_parameters() if p.requires_grad], settings.ema_decay)
    generator = torch.Generator().manual_seed(settings.seed * 7919 + rank)
    state = TrainingState(
        fabric,
        run,
        config,
        {"model": TrainableWeights(student), "optimizer": optimizer, "ema": ema},
        settings.seed,
        values=lambda: {"teacher_sha256": teacher_sha256, "teacher_path": settings.teacher},
        generator=generator,
    )
    resumed = state.restore() if resume else None
    if resumed is not None:
        _check_teacher(resumed, teacher_sha256, settings, state.path)
    else:
        teacher_info = {"sha256": teacher_sha256, "path": settings.teacher}
        info = {
            "stage": "distill",
            "method": settings.method,
            "teacher": teacher_info,
            "init": {"sha256": init_sha256, "path": settings.init} if settings.init else None,
            "trainable_parameters": sum(p.numel() for p in trainable),
        }
        run.write_run_info(config, world, info)
    logger.info(
        "distilling %s (sha256 %s…) on %s × %d, %d samples, %d steps, batch %d per device",
        settings.teacher,
        teacher_sha256[:12],
        fabric.device,
        world,
        len(batches.dataset),
        settings.steps,
        settings.batch_size,
    )
    sample_batch = _fixed_batch(config, SAMPLE_GRID_SIZE) if fabric.is_global_zero and settings.sample_every else None

    prediction = student_prediction(settings)

    def step_fn(batch: TalkingHeadBatch, index: int) -> StepOutput:
        batch = batch.to(fabric.device)
        clean, mask = _targets(student, batch)
        conditions = _conditions(student, batch, clean, mask)
        with torch.no_grad():
            teacher_fn = teacher.make_denoiser(conditions, audio_guidance=guidance, mouth_mask=mask)

        def student_fn(latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return fabric_student.predict_noise(latents, timesteps, conditions, None, mask, prediction)

        common = {"clean": clean, "mouth_mask": mask, "alphas_cumprod": student.alphas_cumprod}
        if settings.method == "direct":  # no target network: the teacher's sample is the target
            with fabric.autocast():
                loss = direct_loss(student_fn, teacher_fn, **common, settings=settings, generator=generator)
            return StepOutput(loss)
        ema.copy_to(target)
        with torch.no_grad():
            target_fn = target.make_denoiser(conditions, mouth_mask=mask)
        with fabric.autocast():
            output = consistency_loss(
                student_fn, teacher_fn, target_fn, **common, settings=settings, generator=generator
            )
        return StepOutput(output.loss, after=lambda: ema.update(trainable))

    def samples(step: int) -> None:
        if sample_batch is not None:
            rows = sample_rows(student, sample_batch.to(fabric.device), settings, seed=step)
            logger.info("samples → %s", save_image_grid(run.samples / f"step_{step:07d}.png", rows))

    def export(step: int) -> None:
        student.save_pretrained(
            run.checkpoints / MODEL_DIR,
            step=step,
            feature_backend=config.data.feature_backend,
            sampler="lcm",
            sampler_steps=settings.student_steps,
            sampler_settings=student_sampler_settings(settings),
            distilled=True,
            teacher={"sha256": teacher_sha256, "path": settings.teacher, "audio_guidance": guidance},
            distill_method=settings.method,
        )

    result = fit(
        fabric,
        state,
        batches,
        step_fn,
        run=run,
        settings=settings,
        optimizer=optimizer,
        section="distill",
        samples_per_step=settings.batch_size,
        progress=progress,
        learning_rate=linear_warmup(settings.learning_rate, settings.warmup_steps),
        clip=(fabric_student, settings.grad_clip),
        hooks=[Every(settings.sample_every, samples, at_end=bool(settings.sample_every))],
        export=export,
    )
    run.close()
    return DistillResult(
        run.path, result.step, result.last_loss, result.stopped, run.checkpoints / MODEL_DIR, teacher_sha256
    )


@torch.no_grad()
def sample_rows(model: DiffTalkModel, batch: TalkingHeadBatch, settings: DistillConfig, seed: int) -> list[list[Any]]:
    """Rows target | masked | reference | reconstruction | LCM 1 step | LCM ``student_steps`` (uint8 images) for a
    small batch, sampled by the project's masked sampler with diffusers' ``LCMScheduler``. The reconstruction (the
    target's latents decoded) is what a perfect student would give: the samples are raw decodes, without the
    pipeline's colour fix, so they share the autoencoder's colour and sharpness losses."""
    was_training = model.training
    model.eval()
    known, mask = _targets(model, batch)
    denoise = model.make_denoiser(
        _conditions(model, batch, known, mask), mouth_mask=mask, prediction=student_prediction(settings)
    )
    assert batch.target_frames is not None and batch.masked_frames is not None
    assert batch.reference_frames is not None
    rows = [list(to_uint8(frames)) for frames in (batch.target_frames, batch.masked_frames, batch.reference_frames)]
    rows.append(list(to_uint8(model.decode_latents(known))))
    for steps in sorted({1, settings.student_steps}):
        generator = torch.Generator().manual_seed(seed)
        scheduler = make_scheduler("lcm", model.alphas_cumprod, **student_sampler_settings(settings))
        latents = sample_masked(
            denoise,
            randn(tuple(known.shape), generator, known.device, known.dtype),
            scheduler=scheduler,
            num_steps=steps,
            mouth_mask=mask,
            known_latents=known,
            generator=generator,
        )
        rows.append(list(to_uint8(model.decode_latents(latents))))
    model.train(was_training)
    return rows
