"""The one training loop of every difftalk trainer: :func:`fit` and the run's one state dict.

A trainer keeps its set-up (model, data, optimiser, hooks) and a ``step_fn(batch, index) → StepOutput``
that computes one step's loss. :func:`fit` owns the rest, the same way for every trainer:

* the steps, from the resumed step to ``steps``, with a progress bar (rank 0, switchable);
* the learning rate of each step (an optional schedule), ``zero_grad`` → ``fabric.backward`` → optional
  gradient-norm clipping → ``optimizer.step()``, then the step's ``after`` work (a discriminator's update,
  an EMA);
* a ``metrics.csv`` / TensorBoard row every ``log_every`` steps and at the last step, with one name for the
  learning rate (``lr``), throughput, elapsed time and host memory;
* hooks (validation, sample grids) every N steps and optionally at the last step; their values join the row;
* checkpoints every ``checkpoint_every`` steps, at the end and on SIGTERM/SIGINT (any rank's signal stops
  every rank), through :class:`TrainingState`.

:class:`TrainingState` is the run's one state dict (``training_state.pt``): the trainer's stateful objects
(model, optimisers, EMA, ...), the step, the RNG states and the trainer's plain values, saved and
restored through ``fabric.save`` / ``fabric.load`` in the layout earlier versions wrote.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from difftalk.config.fields import to_dict
from difftalk.train.common import (
    STATE_NAME,
    RunDir,
    StopSignal,
    gather_from_ranks,
    host_memory_mb,
    ignore_stop_signals,
    iterate_batches,
    make_fabric,
    stop_everywhere,
)
from difftalk.train.sampler import ResumableSampler

logger = logging.getLogger(__name__)

STATE_VERSION = 1
"""Layout version of ``training_state.pt`` (unchanged since the first release; later keys are optional)."""


@dataclass
class StepOutput:
    """What a trainer's ``step_fn`` returns for one step."""

    loss: torch.Tensor
    """The loss the main optimiser minimises (:func:`fit` runs backward, clipping and the step)."""
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    """Logged with this step's value (tensors are read only when a row is written)."""
    means: dict[str, float] = field(default_factory=dict)
    """Logged as their mean over the steps since the last row."""
    after: Callable[[], Mapping[str, float] | None] | None = None
    """Work after the optimiser step (a discriminator's update, an EMA); values it returns join ``metrics``."""


StepFn = Callable[[Any, int], StepOutput]
"""``step_fn(batch, index)``: the loss of step ``index`` (0-based) on ``batch`` (still on the host)."""


@dataclass(frozen=True)
class Every:
    """A hook ``fn(step)`` run every ``steps`` steps (0 = never) and, with ``at_end``, at the last step.

    The last step is ``steps`` of the run or the step a stop signal ended it at. Every rank calls the
    hook (it decides what rank 0 alone does); the values it returns join that step's metrics row.
    """

    steps: int
    fn: Callable[[int], Mapping[str, float] | None]
    at_end: bool = False

    def due(self, step: int, last: bool) -> bool:
        """Whether the hook runs after ``step``."""
        return bool(self.steps and step % self.steps == 0) or (self.at_end and last)


class LoopSettings(Protocol):
    """The fields of a trainer config that :func:`fit` reads (every ``*TrainConfig`` has them)."""

    @property
    def steps(self) -> int: ...

    @property
    def log_every(self) -> int: ...

    @property
    def checkpoint_every(self) -> int: ...


@dataclass
class Batches:
    """A resumable stream of training batches: the loader, its :class:`ResumableSampler` and the dataset."""

    loader: DataLoader[Any]
    sampler: ResumableSampler
    dataset: Any
    """Has ``set_epoch(epoch)`` (per-epoch random choices) besides the ``Dataset`` protocol."""

    @classmethod
    def build(
        cls,
        fabric: Any,
        dataset: Any,
        batch_size: int,
        seed: int,
        num_workers: int,
        collate_fn: Callable[[Any], Any] | None = None,
    ) -> Batches:
        """Shuffled batches of ``batch_size`` per rank; workers are re-created per epoch and ignore SIGTERM."""
        sampler = ResumableSampler(len(dataset), batch_size, fabric.global_rank, fabric.world_size, seed)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=fabric.device.type == "cuda",
            drop_last=True,
            persistent_workers=False,  # re-created per epoch: workers see the dataset's new epoch
            worker_init_fn=ignore_stop_signals,
            generator=torch.Generator(),  # seeded per epoch by iterate_batches: the global RNG stays untouched
        )
        return cls(loader, sampler, dataset)


def open_run(config: Any) -> tuple[Any, RunDir]:
    """Launch Fabric for a trainer config (a ``FabricConfig`` with ``run_dir``) and open its run folder."""
    fabric = make_fabric(config)
    return fabric, RunDir(config.run_dir, active=fabric.is_global_zero)


class TrainableWeights:
    """The trainable parameters of a module as a state (a frozen part, e.g. the autoencoder, is not saved)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{name: CPU tensor}`` of the parameters that require grad."""
        return {n: p.detach().cpu() for n, p in self.module.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the trainable parameters (every one must be present)."""
        missing = {n for n, p in self.module.named_parameters() if p.requires_grad} - set(state)
        if missing:
            raise ValueError(f"the training state does not match this model ({len(missing)} missing parameters)")
        self.module.load_state_dict(dict(state), strict=False)


class TrainingState:
    """A run's one state dict, saved to and restored from ``path`` through ``fabric.save`` / ``fabric.load``.

    Layout (that of every earlier version, plus ``torch_rngs``): ``version``, ``step``, each of ``objects``
    by name (its ``state_dict()``: model, optimiser(s), EMA, ...), ``torch_rng`` (rank 0's global torch
    RNG), ``torch_rngs`` (every rank's, by rank), ``generators`` (every rank's ``generator``, when given),
    ``config`` (the run's config as a dict) and the trainer's ``values()``.

    Args:
        run: the run folder; the state is ``checkpoints/training_state.pt`` in it.
        config: the run's config dataclass.
        objects: stateful objects (modules, optimisers, anything with ``state_dict``/``load_state_dict``).
        seed: the run's seed, for re-seeding ranks whose RNG state cannot be restored.
        values: more plain entries of every save (read back by the trainer from :meth:`restore`).
        generator: a per-rank generator of the trainer (e.g. the diffusion noise), saved and restored too.
    """

    def __init__(
        self,
        fabric: Any,
        run: RunDir,
        config: Any,
        objects: Mapping[str, Any],
        seed: int,
        values: Callable[[], Mapping[str, Any]] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.fabric = fabric
        self.path = run.checkpoints / STATE_NAME
        self.config = config
        self.objects = dict(objects)
        self.seed = seed
        self.values = values
        self.generator = generator
        self.step = 0
        """The step the run continues from (set by :meth:`restore`)."""

    def save(self, step: int) -> None:
        """Write the state at ``step`` (collective: every rank calls it; rank 0 writes)."""
        torch_rngs = gather_from_ranks(self.fabric, torch.get_rng_state())
        state: dict[str, Any] = {"version": STATE_VERSION, "step": step, **self.objects}
        state |= {"torch_rng": torch_rngs[0], "torch_rngs": torch_rngs}
        if self.generator is not None:
            state["generators"] = gather_from_ranks(self.fabric, self.generator.get_state())
        state["config"] = to_dict(self.config)
        state |= self.values() if self.values is not None else {}
        self.fabric.save(self.path, state)

    def restore(self) -> dict[str, Any] | None:
        """Load ``path`` into the objects and RNGs if it exists: the file's other entries, else None.

        Raises:
            ValueError: the file lacks one of the objects (it was written with other settings) or does
                not fit them.
        """
        if not self.path.is_file():
            return None
        try:
            rest = self.fabric.load(self.path, dict(self.objects))
        except KeyError as exc:
            raise ValueError(
                f"{self.path} cannot resume this run: {exc.args[0]} Resume with the settings it was written "
                "with (e.g. the same adversarial_weight) or restart."
            ) from None
        self.step = int(rest["step"])
        self._restore_rngs(rest)
        logger.info("resumed from %s at step %d", self.path, self.step)
        return rest

    def _restore_rngs(self, rest: Mapping[str, Any]) -> None:
        # One rule for the global torch RNG in every trainer: each rank saves its own state ("torch_rngs")
        # and restores its own when the world size is unchanged. Restoring one state on every rank would
        # give all ranks the same stream (dropout, augmentation draws) where a fresh DDP run seeds them
        # apart (seed + rank), so the resumed run would not continue the interrupted one. States of earlier
        # versions hold rank 0's state only ("torch_rng"): restored when world == 1 (exact resume, as
        # before); under DDP, or when the world size changed, each rank is re-seeded from (seed, rank, step)
        # instead. The trainer's own per-rank generator follows the same rule.
        rank, world = self.fabric.global_rank, self.fabric.world_size
        states = rest.get("torch_rngs")
        if states is None and "torch_rng" in rest and world == 1:
            states = [rest["torch_rng"]]
        if states is not None and len(states) == world:
            torch.set_rng_state(states[rank])
        else:
            logger.info("torch RNG re-seeded per rank: the state was written by %s", _writer(states))
            torch.manual_seed(self.seed + rank + self.step)
        if self.generator is None:
            return
        generators = rest.get("generators")
        if generators is not None and len(generators) == world:
            self.generator.set_state(generators[rank])
        else:
            logger.warning(
                "resuming with %d processes, not %s: noise streams are re-seeded", world, _writer(generators)
            )
            self.generator.manual_seed(self.seed * 7919 + rank + self.step)


def _writer(states: Sequence[Any] | None) -> str:
    """Who wrote per-rank states, for messages."""
    return "an earlier version" if states is None else f"{len(states)} process(es)"


def linear_warmup(learning_rate: float, warmup_steps: int) -> Callable[[int], float] | None:
    """The learning rate of step ``index``: linear from ``learning_rate / warmup_steps`` (None: no warm-up)."""
    if not warmup_steps:
        return None
    return lambda index: learning_rate * min(1.0, (index + 1) / warmup_steps)


@dataclass
class FitResult:
    """Where :func:`fit` ended."""

    step: int
    last_loss: float
    stopped: bool
    """A stop signal ended the run before ``steps``."""


def fit(
    fabric: Any,
    state: TrainingState,
    batches: Batches,
    step_fn: StepFn,
    *,
    run: RunDir,
    settings: LoopSettings,
    optimizer: Any,
    section: str,
    samples_per_step: int,
    progress: bool = True,
    learning_rate: Callable[[int], float] | None = None,
    clip: tuple[nn.Module, float] | None = None,
    hooks: Sequence[Every] = (),
    export: Callable[[int], None] | None = None,
    on_log: Callable[[], Mapping[str, float]] | None = None,
    show: Sequence[str] = (),
) -> FitResult:
    """Train from ``state.step`` to ``settings.steps`` (see the module docstring).

    Args:
        section: the config's YAML section (progress bar, messages).
        samples_per_step: samples one rank sees per step (for ``samples_per_second``).
        learning_rate: the learning rate of step ``index`` for every parameter group (None: the optimiser's).
        clip: ``(module, max_norm)``: clip the gradient norm (0 = off) and log ``grad_norm`` (NaN when off).
        hooks: validation / sample hooks.
        export: run on rank 0 after each checkpoint (e.g. the inference checkpoint folder).
        on_log: extra values of each row, read when it is written (e.g. window statistics).
        show: row values shown beside the loss on the progress bar.

    Raises:
        FloatingPointError: the loss is not finite.
    """
    total = settings.steps
    bar = tqdm(total=total, initial=state.step, desc=section, disable=not (progress and fabric.is_global_zero))
    step, loss_value, stopped = state.step, float("nan"), False
    metrics: dict[str, torch.Tensor | float] = {}
    sums: dict[str, float] = {}
    grad_norm: torch.Tensor | None = None
    run_start = window_start = time.perf_counter()
    window_steps = 0
    with StopSignal() as stop:
        for index, epoch, batch in iterate_batches(batches.loader, batches.sampler, batches.dataset, step, total):
            if learning_rate is not None:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(index)
            output = step_fn(batch, index)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(output.loss)
            if clip is not None and clip[1] > 0:
                grad_norm = fabric.clip_gradients(clip[0], optimizer, max_norm=clip[1], error_if_nonfinite=False)
            optimizer.step()
            metrics = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in output.metrics.items()}
            if output.after is not None:
                metrics.update(output.after() or {})
            step, window_steps = index + 1, window_steps + 1
            loss_value = float(output.loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower {section}.learning_rate")
            for key, value in output.means.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update()
            stop_now = stop_everywhere(fabric, stop.requested)
            last = step == total or stop_now
            elapsed = max(time.perf_counter() - window_start, 1e-9)  # the steps' time, without the hooks'
            values: dict[str, float] = {}
            for hook in hooks:
                if hook.due(step, last):
                    values.update(hook.fn(step) or {})
            if step % settings.log_every == 0 or last or values:
                row: dict[str, float] = {"epoch": epoch, "loss": loss_value}
                row |= {key: float(value) for key, value in metrics.items()}
                row |= {key: value / window_steps for key, value in sums.items()}
                row["lr"] = float(optimizer.param_groups[0]["lr"])
                if clip is not None:
                    row["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
                rate = window_steps / elapsed
                row |= {
                    "steps_per_second": rate,
                    "samples_per_second": rate * samples_per_step * fabric.world_size,
                    "elapsed_seconds": time.perf_counter() - run_start,
                    "host_memory_mb": host_memory_mb(),
                }
                row.update(on_log() if on_log is not None else {})
                row.update(values)
                bar.set_postfix({"loss": f"{loss_value:.4f}", **{key: f"{row[key]:.4f}" for key in show}})
                run.log(step, row)
                window_start, window_steps, sums = time.perf_counter(), 0, {}
            if step % settings.checkpoint_every == 0 or last:
                state.save(step)
                if fabric.is_global_zero:
                    if export is not None:
                        export(step)
                    logger.info("checkpoint at step %d → %s", step, state.path.parent)
                fabric.barrier()
            if stop_now:
                stopped = True
                break
    bar.close()
    return FitResult(step, loss_value, stopped)
