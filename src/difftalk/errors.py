"""Errors shared by several stages that the command line reports as one line, without a traceback."""

from __future__ import annotations


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install 'difftalk[extra]'`` fix."""
