"""Config of few-step distillation (``difftalk distill``, YAML section ``distill``): latent consistency
distillation, or direct distillation of the teacher's whole sampler into one student step.

The student is a copy of a trained DiffTalk model (the teacher), so this config has no model fields: the
run's ``model`` section is the teacher's. The data come from the experiment's ``data`` section, as for
``difftalk train``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difftalk.config.fields import require, require_at_least
from difftalk.config.training import FabricConfig


@dataclass(frozen=True)
class DistillConfig(FabricConfig):
    """Distillation of a teacher into a few-step student.

    ``method``: ``lcm``, latent consistency distillation (Luo et al. 2023) to 1-4 steps; ``direct``, the
    student's one step learns the teacher's whole ``teacher_steps``-step DDIM sample from the same z_T
    (knowledge distillation, Luhman & Luhman 2021). Either student is sampled by diffusers'
    ``LCMScheduler`` (σ_data = 0.5, timestep_scaling = 10) with the same ``original_inference_steps``.
    """

    teacher: str = ""
    """The teacher's checkpoint folder (``difftalk train``'s ``checkpoints/model``; ``--teacher``)."""
    method: Literal["lcm", "direct"] = "lcm"
    """``lcm``: consistency distillation over the teacher's ODE; ``direct``: one student step regressed onto the
    teacher's ``teacher_steps``-step DDIM sample from the same noise (one-step students)."""
    teacher_steps: int = 5
    """``direct``: DDIM steps of the teacher sample the student's one step learns (the shipped teacher's default)."""
    init: str = ""
    """Initial weights of the student: a checkpoint folder with the teacher's model config (e.g. an ``lcm``
    student of the same teacher, to make a one-step ``direct`` student from); empty = the teacher's."""
    student_unet_window: int | None = None
    """The student's ``model.unet_window`` (its UNet runs on the mouth window grown by this many latent cells:
    a faster student of the same weights' shapes); None = the teacher's."""
    teacher_audio_guidance: float | None = None
    """Audio guidance of the teacher's ODE the student learns (its CFG on the audio baked into the student,
    which then needs one UNet pass per step instead of two); None = the teacher checkpoint's recorded value
    (1 = unguided). ≠ 1 needs a teacher trained with ``train.audio_dropout``."""
    steps: int = 2000
    """Optimiser steps."""
    batch_size: int = 8
    """Samples per device per step."""
    learning_rate: float = 2e-5
    """AdamW learning rate of the student."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up steps (then constant)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping; 0 disables."""
    ema_decay: float = 0.95
    """Decay of the target network, an EMA of the student (LCM: 0.95), with the LDM warm-up
    min(decay, (1+n)/(10+n)) of ``train.ema``: early targets follow the student closely."""
    original_inference_steps: int = 50
    """N: the DDIM grid t_i = (i + 1)·(T // N) − 1, i < N, the skips are taken on (LCMScheduler's
    ``original_inference_steps``; the student is sampled on a subset of it)."""
    skip: int = 20
    """k, in training timesteps: the teacher's DDIM step goes from t_{n+k} to t_n = t_{n+k} − k (clamped at
    0). A positive multiple of T // ``original_inference_steps`` (20 for T = 1000, N = 50: one grid step)."""
    huber_c: float = 0.001
    """c of the pseudo-Huber loss sqrt(d² + c²) − c (LCM: 0.001)."""
    mask_loss_outside: float = 0.1
    """Weight of the latent cells outside the dilated mouth mask, relative to 1 inside (those cells are
    known at inference); 1 = uniform."""
    mask_loss_dilate: int = 1
    """Latent cells by which the mouth mask is grown for ``mask_loss_outside``."""
    sampler_steps: int | None = None
    """LCM steps of the sample grids, recorded in the student's checkpoint as its default; None = 4 for
    ``lcm``, 1 for ``direct`` (which trains one step only)."""
    latent_cache: bool = True
    """Train on latents encoded once with the teacher's frozen autoencoder (as ``train.latent_cache``)."""
    seed: int = 0
    log_every: int = 10
    """Steps between metrics.csv / TensorBoard rows."""
    checkpoint_every: int = 250
    """Steps between training-state checkpoints (also written at the end and on SIGTERM)."""
    sample_every: int = 250
    """Steps between PNG sample grids (the reconstruction, LCM at 1 step and at ``sampler_steps``); 0 disables."""
    run_dir: str = "runs/distill"
    """Run folder: resolved config, metrics.csv, samples, checkpoints (``checkpoints/model``: the student)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(
            self,
            ("steps", "batch_size", "original_inference_steps", "skip", "teacher_steps", "log_every"),
            1,
        )
        require_at_least(self, ("checkpoint_every",), 1)
        require(
            self.student_unet_window is None or self.student_unet_window >= 0,
            "student_unet_window",
            f"must be >= 0 latent cells or null (the teacher's), got {self.student_unet_window}",
        )
        require_at_least(self, ("warmup_steps", "mask_loss_dilate", "sample_every", "weight_decay", "grad_clip"), 0)
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(
            self.teacher_audio_guidance is None or 0.0 <= self.teacher_audio_guidance <= 20.0,
            "teacher_audio_guidance",
            f"must be in [0, 20] (1 = unguided), got {self.teacher_audio_guidance}",
        )
        require(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        require(self.huber_c > 0, "huber_c", f"must be > 0, got {self.huber_c}")
        require(
            0.0 <= self.mask_loss_outside <= 1.0,
            "mask_loss_outside",
            f"must be in [0, 1] (1 = uniform), got {self.mask_loss_outside}",
        )
        require(
            1 <= self.student_steps <= self.original_inference_steps,
            "sampler_steps",
            f"{self.student_steps} must be in [1, original_inference_steps={self.original_inference_steps}] "
            "(LCMScheduler samples a subset of that grid)",
        )
        require(
            self.method == "lcm" or self.student_steps == 1,
            "sampler_steps",
            f"direct distillation trains one step, so its student samples with 1 step, got {self.student_steps}",
        )

    @property
    def student_steps(self) -> int:
        """``sampler_steps`` resolved: LCM steps the student is sampled with by default."""
        if self.sampler_steps is not None:
            return self.sampler_steps
        return 1 if self.method == "direct" else 4
