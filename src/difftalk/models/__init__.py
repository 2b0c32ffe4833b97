"""Networks: one nn.Module per file, each built from its config dataclass (stage ④)."""
