"""Strict conversion between config dataclasses and plain dicts / YAML.

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the field by its
dotted path (for example ``model.unet.head_dim``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def require(condition: bool, name: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"name: message"`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{name}: {message}")


def require_at_least(config: object, names: Iterable[str], minimum: float) -> None:
    """Each named numeric field of ``config`` must be >= ``minimum`` (else :class:`ConfigError` naming it)."""
    for name in names:
        value = getattr(config, name)
        require(value >= minimum, name, f"must be >= {minimum}, got {value}")


T = TypeVar("T")


def _convert(value: Any, hint: Any, name: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of fields, got {type(value).__name__}")
        return from_dict(hint, value, prefix=name)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{name}: must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{name}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(args, value, strict=True)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported field type {hint!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: a config dataclass.
        data: field values; missing fields keep their defaults.
        prefix: dotted path of ``cls`` inside the top-level config, used in error messages.

    Raises:
        ConfigError: naming the offending field by its dotted path.
    """
    assert dataclasses.is_dataclass(cls)
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    dotted = (prefix + ".") if prefix else ""
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(dotted + k for k in unknown)}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {key: _convert(value, hints[key], dotted + key) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{dotted}{exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) of a config dataclass, suitable for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    result = plain(config)
    assert isinstance(result, dict)
    return result


def replace(config: T, overrides: Mapping[str, Any]) -> T:
    """Return ``config`` with dotted-path overrides applied, e.g. ``{"sampler.num_steps": 20}``."""
    data = to_dict(config)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return from_dict(type(config), data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; an empty file gives an empty dict."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    return data


def save_yaml(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML."""
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(to_dict(config), handle, sort_keys=False)


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """``--set`` strings ``key=value`` → ``{dotted key: value parsed as YAML}`` (for :func:`replace`)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides
