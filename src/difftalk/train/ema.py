"""Exponential moving average of model weights (LDM ``LitEma`` warm-up)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of the trainable parameters of a module.

    ``decay_t = min(decay, (1 + n) / (10 + n))`` after n updates, as in LDM, so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, named_parameters: list[tuple[str, nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.names = [name for name, _ in named_parameters]
        self.shadow = [p.detach().float().clone() for _, p in named_parameters]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, parameters: list[nn.Parameter]) -> None:
        """Move the shadow weights towards ``parameters`` (same order as at construction)."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in parameters], weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the shadow weights into ``module`` (matched by parameter name)."""
        params = dict(module.named_parameters())
        for name, value in zip(self.names, self.shadow, strict=True):
            params[name].copy_(value)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(zip(self.names, self.shadow, strict=True))}

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow = state["shadow"]
        assert isinstance(shadow, dict)
        missing = set(self.names) - set(shadow)
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} parameters (e.g. {sorted(missing)[:3]})")
        self.shadow = [shadow[name].to(self.shadow[i].device).float() for i, name in enumerate(self.names)]
        updates = state["updates"]
        assert isinstance(updates, int)
        self.updates = updates
