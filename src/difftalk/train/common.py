"""What every trainer shares: the Fabric setup, the run folder, metrics, atomic state files, SIGTERM.

The training loop itself (steps, logging, checkpoints, exact resume) is ``train.loop.fit``.

A run folder holds ``config.yaml`` (the resolved config), ``run.json`` (git SHA, command line, world
size, versions), ``metrics.csv``, ``tensorboard/``, ``samples/*.png`` and ``checkpoints/``.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import torch

from difftalk.config.training import FabricConfig

logger = logging.getLogger(__name__)

STATE_NAME = "training_state.pt"


def make_fabric(config: FabricConfig) -> Any:
    """A launched ``lightning.Fabric``; ``precision="auto"`` picks bf16-mixed on GPUs that support it."""
    import lightning as L

    accelerator, devices, num_nodes = config.accelerator, config.devices, config.num_nodes
    precision: Any = config.precision  # Fabric types its accepted strings narrower than Precision
    strategy: str = config.strategy
    if precision == "auto":
        cuda = accelerator in ("auto", "cuda") and torch.cuda.is_available()
        precision = "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"
    if strategy == "auto" and devices * num_nodes > 1:
        strategy = "ddp"
    from difftalk.train.checkpoint_io import StateFileIO

    fabric = L.Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        plugins=[StateFileIO()],  # fabric.save/load write and read training_state.pt as save_state/load_state
    )
    fabric.launch()
    if fabric.world_size > 1:
        atexit.register(_destroy_process_group)
    if fabric.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return fabric


def _destroy_process_group() -> None:
    """Tear the process group down before interpreter shutdown (left to the destructors, gloo can abort
    the process with "terminate called without an active exception" after a run that succeeded)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def finish_distributed() -> None:
    """After a run that succeeded on every rank: wait for all ranks, then tear the process group down, so
    no rank exits (closing its sockets) while another still writes its final files or tears down (a gloo
    run once aborted at exit that way after it had finished). A no-op outside distributed runs; a run that
    failed skips it and leaves teardown to the exit handler, since a barrier could wait on a dead rank."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def git_sha() -> str:
    """The git commit of the difftalk source tree, or ``unknown``."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
        return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class StopSignal:
    """Turns SIGTERM (and SIGINT) into a flag checked between steps, so the run can checkpoint and exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        logger.warning("received signal %d: will checkpoint and stop after this step", signum)
        self.requested = True

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # signal.signal raises ValueError outside the main thread (e.g. a test runner thread).
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM and SIGINT.

    Schedulers and Ctrl-C signal the whole process group; a worker that died of it would make the
    trainer raise before :class:`StopSignal` lets it checkpoint. The trainer stops its workers itself
    (and PyTorch's workers exit when their parent dies).
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


class RunDir:
    """The run folder; only rank 0 writes to it (other ranks get an inert instance)."""

    def __init__(self, path: str | Path, active: bool) -> None:
        self.path = Path(path)
        self.active = active
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        self._csv: Any = None
        self._csv_writer: Any = None
        self._tensorboard: Any = None
        if active:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.samples.mkdir(parents=True, exist_ok=True)

    def write_run_info(self, config: Any, world_size: int, extra: Mapping[str, Any] | None = None) -> None:
        """config.yaml + run.json (git SHA, argv, versions, world size)."""
        if not self.active:
            return
        from difftalk.config.fields import save_yaml

        save_yaml(config, self.path / "config.yaml")
        info = {
            "git_sha": git_sha(),
            "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "world_size": world_size,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            **(extra or {}),
        }
        with open(self.path / "run.json", "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Append a row to metrics.csv and TensorBoard (a key first seen later extends the header)."""
        if not self.active:
            return
        row = {"step": step, **values}
        path = self.path / "metrics.csv"
        if self._csv_writer is None or set(row) - set(self._csv_writer.fieldnames):
            self._reopen_csv(path, list(row))
        self._csv_writer.writerow(row)
        self._csv.flush()
        writer = self.tensorboard()
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, step)

    def _reopen_csv(self, path: Path, keys: list[str]) -> None:
        """(Re)open metrics.csv with the union of the existing columns and ``keys``, keeping its rows."""
        if self._csv is not None:
            self._csv.close()
        rows: list[dict[str, str]] = []
        existing: list[str] = []
        if path.is_file() and path.stat().st_size > 0:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                existing = list(reader.fieldnames or [])
                rows = list(reader)
        fields = existing + [k for k in keys if k not in existing]
        if fields != existing:
            with open(path, "w", newline="", encoding="utf-8") as handle:
                rewrite = csv.DictWriter(handle, fieldnames=fields, restval="")
                rewrite.writeheader()
                rewrite.writerows(rows)
        self._csv = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._csv_writer = csv.DictWriter(self._csv, fieldnames=fields, restval="")

    def tensorboard(self) -> Any:
        if not self.active:
            return None
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; metrics go to metrics.csv only")
                self._tensorboard = False
                return None
            self._tensorboard = SummaryWriter(str(self.path / "tensorboard"))
        return self._tensorboard or None

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._tensorboard:
            self._tensorboard.close()


def host_memory_mb() -> float:
    """Resident memory of this process and its children (DataLoader workers), in MiB."""
    process = psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a half-written state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (weights-only unpickling)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path} is not a difftalk training state")
    return state


def gather_from_ranks(fabric: Any, state: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``state`` (e.g. an RNG state; the same shape on every rank), by rank (collective)."""
    if fabric.world_size == 1:
        return [state]
    gathered = fabric.all_gather(state.to(fabric.device))
    return [g.cpu() for g in gathered]


def stop_everywhere(fabric: Any, local_stop: bool) -> bool:
    """True on every rank if any rank was asked to stop (collective when distributed)."""
    if fabric.world_size == 1:
        return local_stop
    flag = torch.tensor([1.0 if local_stop else 0.0], device=fabric.device)
    return bool(fabric.all_reduce(flag, reduce_op="sum").item() > 0)


def iterate_batches(
    loader: Any, sampler: Any, dataset: Any, start_step: int, total_steps: int
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(step, epoch, batch)`` from ``start_step`` to ``total_steps``, resuming mid-epoch exactly.

    The (epoch, batch position) of a step follows from the step alone, so resuming needs no state
    beyond the step counter (see ``ResumableSampler``). A loader with its own ``generator`` draws its
    workers' base seed from it, seeded here by (seed, epoch, rank): starting an epoch, or resuming in
    the middle of one, then leaves the global torch RNG alone (it is part of the exact resume).
    """
    step = start_step
    while step < total_steps:
        epoch, position = divmod(step, sampler.batches_per_epoch)
        sampler.set_epoch(epoch, position)
        dataset.set_epoch(epoch)
        if getattr(loader, "generator", None) is not None:
            loader.generator.manual_seed((sampler.seed * 1_000_003 + epoch) * sampler.world_size + sampler.rank)
        for batch in loader:
            yield step, epoch, batch
            step += 1
            if step >= total_steps:
                return
