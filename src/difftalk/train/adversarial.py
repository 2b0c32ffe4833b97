"""The adversarial part of a generator's training step, shared by the autoencoder and LipGAN trainers.

Per step (from ``start`` on): before the generator's backward, its adversarial term through the frozen
discriminator; after its optimiser step, the discriminator's own step on the real and the detached
generated images (``StepOutput.after``, run by ``train.loop.fit``). Two losses:

* ``hinge`` (taming / LDM first stage): generator ``−D(fake)``, discriminator
  ``relu(1 − D(real)) + relu(1 + D(fake))``;
* ``non_saturating`` (Wav2Lip): generator ``softplus(−D(fake))``, discriminator
  ``softplus(−D(real)) + softplus(D(fake))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

GanLoss = Literal["hinge", "non_saturating"]


class Adversary:
    """A discriminator with its optimiser (set up on ``fabric``), the loss it plays and when it starts.

    Args:
        view: what the discriminator sees of a batch of images (default: the images).
    """

    def __init__(
        self,
        fabric: Any,
        discriminator: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss: GanLoss,
        start: int,
        view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.fabric = fabric
        self.discriminator, self.optimizer = fabric.setup(discriminator, optimizer)
        self.loss = loss
        self.start = start
        self.view = view or (lambda images: images)

    def state(self) -> dict[str, Any]:
        """Its entries of the training state (``discriminator``, ``discriminator_optimizer``)."""
        return {"discriminator": self.discriminator, "discriminator_optimizer": self.optimizer}

    def generator_term(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss on ``fake`` (gradients reach the generator only)."""
        self.discriminator.requires_grad_(False)
        logits = self.discriminator(self.view(fake))
        self.discriminator.requires_grad_(True)
        return -logits.mean() if self.loss == "hinge" else F.softplus(-logits).mean()

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One discriminator step on ``real`` and the detached ``fake``; its loss."""
        real_logits = self.discriminator(self.view(real))
        fake_logits = self.discriminator(self.view(fake.detach()))
        if self.loss == "hinge":
            loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        else:
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        self.optimizer.step()
        return float(loss.detach())


@dataclass
class AdversarialStep:
    """The adversarial part of one generator step."""

    term: torch.Tensor
    """The generator's adversarial loss (NaN while the adversary is off: none, or before its start)."""
    active: bool
    """Whether ``term`` is part of this step's loss."""
    update: Callable[[], Mapping[str, float]]
    """The discriminator's step, run after the generator's (``StepOutput.after``): ``{"discriminator": loss}``."""


def adversarial_step(
    adversary: Adversary | None, index: int, real: torch.Tensor, fake: torch.Tensor
) -> AdversarialStep:
    """The GAN step of a generator at step ``index`` (0-based): its adversarial term and the deferred update."""
    if adversary is None or index < adversary.start:
        return AdversarialStep(torch.full((), float("nan")), False, lambda: {"discriminator": float("nan")})
    return AdversarialStep(
        adversary.generator_term(fake), True, lambda: {"discriminator": adversary.update(real, fake)}
    )
