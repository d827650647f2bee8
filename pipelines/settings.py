"""Curation settings: every rule is a named field of a dataclass, filled from defaults, a TOML file and ``--set``.

Keys are ``<source>.<field>`` (e.g. ``shp.min_score_ratio = 3``) or ``shared.<field>`` for the rules every
source shares (``shared.min_margin``), which a source may override (``ultrafeedback.min_margin = 0.5``).
A TOML file uses one table per source: ``[shp]`` / ``min_score_ratio = 3``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from pipelines.sources import ADAPTERS, MIXTURES, Adapter
from pipelines.sources.base import SharedRules


class SettingsError(ValueError):
    """A configuration that names an unknown source or rule, or gives a value of the wrong type."""


def _coerce(value: Any, example: Any, key: str) -> Any:
    if isinstance(value, str) and not isinstance(example, str):
        if isinstance(example, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SettingsError(f"{key}: expected true or false, got {value!r}")
            return value.lower() in ("true", "1")
        try:
            return type(example)(value)
        except ValueError as exc:
            raise SettingsError(f"{key}: expected {type(example).__name__}, got {value!r}") from exc
    if isinstance(example, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(example):
        raise SettingsError(f"{key}: expected {type(example).__name__}, got {value!r}")
    return value


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``["shp.min_score_ratio=3"]`` -> ``{"shp": {"min_score_ratio": "3"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise SettingsError(f"--set expects SOURCE.RULE=VALUE, got {item!r}")
        out.setdefault(section, {})[name] = value.strip()
    return out


def load_config(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def resolve_sources(spec: str) -> list[str]:
    """``all``, a mixture name (mix1, mix2) or comma-separated source names, in the canonical order."""
    if spec == "all":
        return list(ADAPTERS)
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in MIXTURES:
            names += MIXTURES[part]
        elif part in ADAPTERS:
            names.append(part)
        else:
            raise SettingsError(f"unknown source {part!r}; known: all, {', '.join(MIXTURES)}, {', '.join(ADAPTERS)}")
    return [n for n in ADAPTERS if n in set(names)]


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise SettingsError(f"unknown setting {section}.{name}; known: {', '.join(fields) or '(none)'}")
        kwargs[name] = _coerce(value, getattr(defaults, name), f"{section}.{name}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def build_adapters(names: list[str], config: dict[str, dict[str, Any]]) -> list[Adapter]:
    """Adapters for ``names`` with their settings; unknown sections or keys are errors, before any work."""
    unknown = set(config) - set(ADAPTERS) - {"shared"}
    if unknown:
        raise SettingsError(f"unknown config section(s) {sorted(unknown)}; known: shared, {', '.join(ADAPTERS)}")
    shared_fields = {f.name for f in dataclasses.fields(SharedRules)}
    adapters = []
    for name, cls in ADAPTERS.items():
        section = dict(config.get(name, {}))
        own_shared = {k: section.pop(k) for k in list(section) if k in shared_fields}
        settings = _build(cls.Settings, section, name)
        shared = _build(SharedRules, {**config.get("shared", {}), **own_shared}, name)
        if name in names:
            adapters.append(cls(settings, shared))
    return adapters


def describe_settings() -> str:
    """Every setting with its default, for ``--help``."""
    lines = ["shared rules (any source may override):"]
    lines += [f"  shared.{f.name} = {f.default!r}" for f in dataclasses.fields(SharedRules)]
    for name, cls in ADAPTERS.items():
        fields = dataclasses.fields(cls.Settings)
        if fields:
            lines.append(f"{name}:")
            lines += [f"  {name}.{f.name} = {f.default!r}" for f in fields]
    return "\n".join(lines)
