"""Batch generation: many (source, audio, output) jobs with the model loaded once.

A job list is a CSV file (a header row naming the columns) or a YAML file (a list of mappings, or a
mapping with ``defaults:`` and ``jobs:``). Each job needs ``source`` (the video to dub or the photo to
animate; ``reference``, its name in earlier versions, is still read) and ``audio``; ``output`` is
optional when the caller gives a default output folder. Any other key is a generation option with the
name of a :class:`~difftalk.pipeline.options.GenerateOptions` field (``steps`` is accepted for
``num_steps``, as on the command line), overriding the caller's options for that job only. Relative
paths are resolved against the job file's folder.

::

    source,audio,output,steps,noise
    clips/anna.mp4,speech/hello.wav,out/anna_hello.mp4,25,shared
    clips/anna.mp4,speech/bye.m4a,out/anna_bye.mp4,,
    photos/ben.png,speech/hello.wav,,50,

The whole list is checked before any generation starts (missing files, unknown or invalid options, two
jobs writing the same file); then the jobs run grouped by source, so each source is analysed once
(:meth:`TalkingHeadPipeline.set_source` keeps its analyses), and one failing job is reported while
the others go on. Outputs are written atomically, so a failed or interrupted job never leaves half a file
and ``skip_existing`` resumes a batch where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from difftalk.config.fields import ConfigError, replace, to_dict
from difftalk.pipeline.base import GenerationResult, TalkingHeadPipeline, resolve_output_path
from difftalk.pipeline.options import GenerateOptions

logger = logging.getLogger(__name__)

PATH_KEYS = ("source", "audio", "output")
OLD_KEYS = {"reference": "source"}
"""Job keys of earlier versions → their name now."""
OPTION_ALIASES = {"steps": "num_steps"}
"""Job keys spelled as on the command line → GenerateOptions fields."""
BATCH_ONLY = ("progress", "watermark")
"""Options a job may not change (they belong to the whole run)."""


@dataclass(frozen=True)
class Job:
    """One video to make."""

    source: Path
    """The video to dub or the photo to animate."""
    audio: Path
    output: Path
    """The MP4 the job writes (already resolved: a file path with its extension)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """GenerateOptions fields this job overrides."""
    name: str = ""
    """How reports name the job (``row 3`` of a CSV, ``job 2`` of a YAML list, or the audio's name)."""


@dataclass
class JobResult:
    """What became of one job."""

    job: Job
    status: Literal["done", "failed", "skipped"]
    result: GenerationResult | None = None
    error: str | None = None
    seconds: float = 0.0


def _option_overrides(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Job keys other than the paths → validated GenerateOptions overrides (``ValueError`` naming ``where``)."""
    fields = set(to_dict(GenerateOptions())) - set(BATCH_ONLY)
    valid = sorted(fields) + sorted(OPTION_ALIASES)
    overrides: dict[str, Any] = {}
    for key, value in raw.items():
        if key in PATH_KEYS or value is None or value == "":
            continue
        name = OPTION_ALIASES.get(key, key)
        if name not in fields:
            raise ValueError(f"{where}: unknown job option {key!r}; job options: {', '.join(valid)}")
        overrides[name] = value
    try:
        replace(GenerateOptions(), overrides)
    except (ConfigError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return overrides


def _under(base: Path, value: Any) -> str:
    """``value`` relative to ``base``, keeping a trailing ``/`` (it marks an output folder)."""
    text = str(value)
    joined = str(base / text)
    return joined + os.sep if text.endswith(("/", os.sep)) else joined


def _read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(name, row)`` pairs of a CSV or YAML job file; CSV cells are parsed as YAML scalars."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = {OLD_KEYS.get(f.strip(), f.strip()) for f in reader.fieldnames or []}
            if not {"source", "audio"} <= columns:
                raise ValueError(
                    f"{path}: a job CSV needs a header row with at least the columns source,audio "
                    f"(optional: output and generation options), got {reader.fieldnames}"
                )
            rows = []
            for number, row in enumerate(reader, start=2):
                cells = _renamed({k.strip(): (v or "").strip() for k, v in row.items() if k is not None}, path)
                parsed = {k: v if k in PATH_KEYS else (yaml.safe_load(v) if v else None) for k, v in cells.items()}
                rows.append((f"{path.name} line {number}", parsed))
            return rows
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ValueError(f"{path}: a job list is a .csv, .yaml or .yml file")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"defaults", "jobs"})
        if unknown:
            raise ValueError(f"{path}: unknown top-level key(s) {unknown}; use 'defaults' and 'jobs'")
        defaults = dict(data.get("defaults") or {})
        data = data.get("jobs")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"{path}: expected a list of jobs (mappings with source, audio, output)")
    defaults = _renamed(defaults, path)
    return [(f"{path.name} job {i + 1}", {**defaults, **_renamed(item, path)}) for i, item in enumerate(data)]


def _renamed(row: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``row`` with the keys of earlier versions renamed (``reference`` → ``source``)."""
    out = dict(row)
    for old, new in OLD_KEYS.items():
        if old in out:
            if new in out:
                raise ValueError(f"{path}: give '{new}' or its old name '{old}', not both")
            out[new] = out.pop(old)
    return out


def load_jobs(path: str | Path, default_output: str | Path | None = None) -> list[Job]:
    """Read and check a job list (see the module docstring).

    Args:
        path: the ``.csv`` / ``.yaml`` job file; relative paths inside it are relative to its folder.
        default_output: the folder for jobs without an ``output`` (each named ``<source>_<audio>.mp4``).

    Raises:
        FileNotFoundError: the job file, or a job's source or audio, does not exist.
        ValueError: a malformed file, an unknown or invalid option, a job without an output, or two jobs
            writing the same file — all found before anything is generated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"job list {path} does not exist")
    base = path.resolve().parent
    jobs = []
    for name, row in _read_rows(path):
        missing = [key for key in ("source", "audio") if not row.get(key)]
        if missing:
            raise ValueError(f"{name}: no {' and no '.join(missing)} given")
        source, audio = (base / str(row["source"]), base / str(row["audio"]))
        if row.get("output"):
            output = _under(base, row["output"])
        elif default_output:
            output = str(Path(default_output)) + os.sep
        else:
            raise ValueError(f"{name}: no output given; add an output column/key or pass -o FOLDER")
        output_path = resolve_output_path(output, source, audio)
        jobs.append(Job(source, audio, output_path, _option_overrides(row, name), name))
    if not jobs:
        raise ValueError(f"{path}: the job list is empty")
    check_jobs(jobs)
    return jobs


def jobs_for_audios(source: str | Path, audios: Sequence[str | Path], output: str | Path) -> list[Job]:
    """One job per audio file for one source video or photo; with several audios ``output`` must be a folder."""
    if len(audios) > 1 and not (str(output).endswith("/") or Path(output).is_dir()):
        raise ValueError(
            f"{len(audios)} audio files need an output folder: -o {output}/ (each video is named "
            "<source>_<audio>.mp4), or use --jobs with an output per row"
        )
    jobs = [Job(Path(source), Path(a), resolve_output_path(output, source, a), {}, Path(a).name) for a in audios]
    check_jobs(jobs)
    return jobs


def check_jobs(jobs: Sequence[Job]) -> None:
    """Refuse missing inputs and two jobs writing the same file, before any work starts."""
    for job in jobs:
        for kind, file in (("source", job.source), ("audio", job.audio)):
            if not file.is_file():
                raise FileNotFoundError(f"{job.name}: {kind} {file} does not exist")
    seen: dict[Path, str] = {}
    for job in jobs:
        key = job.output.resolve()
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {job.name} both write {job.output}; give them different outputs "
                "(audio files with the same name need an output per job)"
            )
        seen[key] = job.name


def run_jobs(
    pipe: TalkingHeadPipeline,
    jobs: Sequence[Job],
    options: GenerateOptions | None = None,
    skip_existing: bool = False,
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` with one loaded pipeline; a failing job is reported and the rest go on.

    Jobs sharing a source run one after the other (the source is analysed once). Results come
    back in the order of ``jobs``; ``on_result`` is called as each job ends.
    """
    options = options or GenerateOptions()
    first_seen: dict[Path, int] = {}
    for index, job in enumerate(jobs):
        first_seen.setdefault(job.source.resolve(), index)
    order = sorted(range(len(jobs)), key=lambda i: (first_seen[jobs[i].source.resolve()], i))
    results: dict[int, JobResult] = {}
    for count, index in enumerate(order, start=1):
        job = jobs[index]
        if skip_existing and job.output.is_file():
            outcome = JobResult(job, "skipped", error="output exists")
        else:
            logger.info("job %d/%d (%s): %s + %s → %s", count, len(jobs), job.name, job.source, job.audio, job.output)
            start = time.perf_counter()
            try:
                job_options = replace(options, dict(job.options))
                pipe.set_source(job.source, job_options)
                outcome = JobResult(job, "done", pipe.generate(job.audio, job.output, job_options))
            except Exception as exc:  # any failure of one job is reported; the others go on
                logger.error("%s failed: %s", job.name, exc)
                logger.debug("details of %s", job.name, exc_info=True)
                outcome = JobResult(job, "failed", error=f"{type(exc).__name__}: {exc}")
            outcome.seconds = time.perf_counter() - start
        results[index] = outcome
        if on_result is not None:
            on_result(outcome)
    return [results[i] for i in range(len(jobs))]


def summarize(results: Sequence[JobResult]) -> str:
    """A Markdown table of the jobs and a count line, for the terminal."""
    lines = ["| job | status | output | frames | seconds | error |", "|---|---|---|---|---|---|"]
    for item in results:
        frames = str(item.result.num_frames) if item.result else "–"
        lines.append(
            f"| {item.job.name} | {item.status} | {item.job.output} | {frames} | {item.seconds:.1f} | "
            f"{item.error or ''} |"
        )
    counts = {status: sum(r.status == status for r in results) for status in ("done", "failed", "skipped")}
    lines.append(f"\n{counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped")
    return "\n".join(lines)


def write_summary(results: Sequence[JobResult], path: str | Path) -> Path:
    """The jobs and their outcome as JSON (``path``), written when the batch ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "name": r.job.name,
            "source": str(r.job.source),
            "audio": str(r.job.audio),
            "output": str(r.job.output),
            "options": dict(r.job.options),
            "status": r.status,
            "error": r.error,
            "seconds": round(r.seconds, 3),
            "frames": r.result.num_frames if r.result else None,
        }
        for r in results
    ]
    path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return path
