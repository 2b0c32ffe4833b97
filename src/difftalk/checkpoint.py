"""Checkpoint folders: ``weights.safetensors`` + ``config.json``, written atomically, loaded strictly.

Every inference checkpoint (an autoencoder, a whole DiffTalk model) is a folder in the diffusers
style. ``config.json`` records what the folder holds (``difftalk_kind``), the format version, the
package version and the component config, so a folder is self-describing and a wrong folder is
refused with a message that names the problem. Weights are never unpickled.

Every loader takes a folder or a Hugging Face Hub model repo id (``owner/name``, optionally
``owner/name@revision``): :func:`resolve_checkpoint_dir` is the one place that turns either into a
local folder (hub repos through ``huggingface_hub.snapshot_download``, which uses the HF cache and
honours ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from difftalk import __version__
from difftalk.config import ConfigError, from_dict, to_dict

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1

_HUB_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_REPO_ID = re.compile(rf"(?P<repo_id>{_HUB_NAME}/{_HUB_NAME})(?:@(?P<revision>[A-Za-z0-9_][A-Za-z0-9_./-]*))?")
"""A Hugging Face Hub model repo id ``owner/name``, optionally ``@revision`` (branch, tag or commit)."""


class CheckpointError(ValueError):
    """A folder is not a (compatible) difftalk checkpoint."""


M = TypeVar("M", bound=nn.Module)


def atomic_replace_dir(tmp_dir: Path, directory: Path) -> None:
    """Move the finished ``tmp_dir`` to ``directory``, replacing any old one without a half-written state."""
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
        os.replace(tmp_dir, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, directory)


def save_pretrained(
    module: nn.Module,
    config: Any,
    directory: str | Path,
    kind: str,
    dtype: torch.dtype | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``module``'s weights and ``config`` to ``directory`` atomically.

    Args:
        module: the model; its ``state_dict`` (persistent buffers included) is saved.
        config: the component's config dataclass, saved in ``config.json``.
        directory: target folder; created, or replaced as a whole once the new one is complete.
        kind: what the folder holds (``"DiffTalkModel"``, ``"Autoencoder"``); checked on load.
        dtype: optional floating dtype for the stored weights (e.g. ``torch.float16`` to halve size).
        extra: additional JSON-serialisable metadata (training step, metrics, command line).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous().clone()
    meta = {
        "difftalk_kind": kind,
        "format_version": FORMAT_VERSION,
        "difftalk_version": __version__,
        "config": to_dict(config),
    }
    if extra:
        meta["extra"] = dict(extra)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_file(state, str(tmp_dir / WEIGHTS_NAME), metadata={"format": "pt", "difftalk_kind": kind})
        with open(tmp_dir / CONFIG_NAME, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
        atomic_replace_dir(tmp_dir, directory)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("saved %s to %s", kind, directory)


def parse_hub_repo_id(source: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` if ``source`` looks like a hub repo id (``owner/name[@revision]``), else None."""
    match = HUB_REPO_ID.fullmatch(source)
    if match is None or ".." in match["repo_id"] or "--" in match["repo_id"]:
        return None
    return match["repo_id"], match["revision"]


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or now


def resolve_checkpoint_dir(source: str | Path) -> Path:
    """The local folder of a checkpoint given as a folder or as a Hugging Face Hub model repo id.

    An existing path is returned as it is. Otherwise, if ``source`` looks like ``owner/name`` or
    ``owner/name@revision``, the repo's ``config.json`` and ``weights.safetensors`` are fetched with
    ``huggingface_hub.snapshot_download`` (or found in the HF cache; with ``HF_HUB_OFFLINE=1`` only the
    cache is used) and the snapshot folder is returned.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor a hub repo that could be fetched
            (the message names both possibilities and the hub's reason).
    """
    path = Path(source)
    if path.exists():
        return path
    parsed = parse_hub_repo_id(str(source))
    if parsed is None:
        raise FileNotFoundError(
            f"checkpoint folder {path} does not exist; pass the folder that holds {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}, or a Hugging Face Hub model repo id owner/name[@revision]"
        )
    repo_id, revision = parsed
    hint = (
        f"checkpoint {str(source)!r} is neither an existing folder nor a Hugging Face Hub model repo that could be "
        "loaded"
    )
    fix = (
        f"pass the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME} (written by `difftalk train`), or the id of a "
        "hub repo that holds them and that you can read (`hf auth login` for private ones); with "
        "HF_HUB_OFFLINE=1 only repos already in the Hugging Face cache are found"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{hint} (huggingface-hub is not installed); {fix}") from None
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
            local_files_only=_hub_offline(),
        )
    except (OSError, ValueError) as exc:  # hub errors: HfHubHTTPError and LocalEntryNotFoundError are OSErrors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FileNotFoundError(f"{hint} ({type(exc).__name__}: {reason}); {fix}") from None
    logger.info("checkpoint %s → %s", source, folder)
    return Path(folder)


def read_checkpoint_meta(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and check ``config.json`` of a checkpoint folder (or hub repo id, :func:`resolve_checkpoint_dir`).

    Raises:
        FileNotFoundError: the folder does not exist and is no reachable hub repo.
        CheckpointError: the folder is not a difftalk checkpoint, or holds another kind of model.
    """
    directory = resolve_checkpoint_dir(directory)
    what = kind or "difftalk"
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory} is a file, not a checkpoint folder; pass the folder that holds "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    config_path = directory / CONFIG_NAME
    hint = (
        f"a difftalk checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}, as written by "
        "`difftalk train` or save_pretrained()"
    )
    if not config_path.is_file():
        raise CheckpointError(f"{directory} is not a difftalk checkpoint: it has no {CONFIG_NAME}; {hint}")
    try:
        with open(config_path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); {hint}") from None
    if not isinstance(meta, dict) or "difftalk_kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{directory} is not a difftalk checkpoint: {CONFIG_NAME} has no difftalk_kind; {hint}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} was written by a newer difftalk (format {meta['format_version']}); upgrade difftalk"
        )
    if kind is not None and meta["difftalk_kind"] != kind:
        raise CheckpointError(f"{directory} holds a {meta['difftalk_kind']}, but a {what} checkpoint is needed")
    if not (directory / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the checkpoint is incomplete")
    return meta


def weights_sha256(directory: str | Path) -> str:
    """Hex SHA-256 of the bytes of a checkpoint folder's ``weights.safetensors`` (folder or hub repo id).

    The identity of a checkpoint's weights, e.g. the teacher a ``difftalk distill`` student records.

    Raises:
        FileNotFoundError: the folder (or its weights file) does not exist.
    """
    path = resolve_checkpoint_dir(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the checkpoint folder that holds {WEIGHTS_NAME}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a readable error listing the mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(
                f"{len(wrong_shape)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"weights in {source} do not match the model built from its config: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_pretrained(
    cls: type[M],
    config_cls: type,
    directory: str | Path,
    kind: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> M:
    """Build ``cls(config)`` from a checkpoint folder (or hub repo id) and load its weights strictly."""
    directory = resolve_checkpoint_dir(directory)
    meta = read_checkpoint_meta(directory, kind)
    try:
        config: Any = from_dict(config_cls, meta["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {exc}") from None
    module = cls(config)
    try:
        state = load_file(str(directory / WEIGHTS_NAME), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{directory / WEIGHTS_NAME} is not a readable safetensors file: {exc}") from None
    load_state_dict_strict(module, state, str(directory))
    module.to(device=device, dtype=dtype)
    module.eval()
    return module
