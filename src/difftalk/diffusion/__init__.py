"""Noise schedules and samplers over a denoise callable (stage ⑤); never imports models/."""
