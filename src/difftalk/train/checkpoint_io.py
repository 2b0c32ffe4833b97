"""How Fabric reads and writes a run's ``training_state.pt`` (imported by ``make_fabric`` only: it loads Lightning).

``fabric.save`` / ``fabric.load`` go through this plugin, so the file stays what difftalk has always
written: one ``torch.save`` dict, replaced atomically (temporary file in the same folder, then rename),
read back with weights-only unpickling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from difftalk.train.common import load_state, save_state


class StateFileIO(CheckpointIO):
    """Fabric checkpoint I/O with :func:`save_state` / :func:`load_state` (rank 0 writes; every rank reads)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically."""
        save_state(Path(path), checkpoint)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read a training state (tensors on the CPU; the objects it is loaded into move them)."""
        return load_state(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        """Delete ``path`` if it exists."""
        Path(path).unlink(missing_ok=True)
