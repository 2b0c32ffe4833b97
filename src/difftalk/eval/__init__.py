"""Benchmark runs and their evaluation: ``benchmark`` writes a results folder, ``evaluate`` scores it."""
