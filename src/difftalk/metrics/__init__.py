"""Evaluation metrics, each a function on frame arrays or tensors (stage ⑦)."""
