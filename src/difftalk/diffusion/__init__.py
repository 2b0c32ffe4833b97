"""Noise schedules and samplers over a denoise callable (stage ⑤); never imports models/.

The sampler names live here (no torch import) so that options can be checked before anything loads.
"""

SAMPLERS = ("ddim", "dpmpp", "unipc", "lcm")
"""Sampler names: ``ddim`` (the paper's; LDM's "uniform" timesteps, ending at ᾱ_0), ``dpmpp``
(DPM-Solver++ 2M, Lu et al. 2022), ``unipc`` (UniPC, Zhao et al. 2023) and ``lcm`` (latent consistency
sampling: only for a student trained by ``difftalk distill``)."""

DISTILLED_ONLY = frozenset({"lcm"})
"""Samplers that only make sense for a consistency-distilled student."""
