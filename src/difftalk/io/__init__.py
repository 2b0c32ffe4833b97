"""Bytes ↔ arrays: the only place that reads and writes media files (stage ①)."""
