"""Clip folders → training samples (stage ③)."""
