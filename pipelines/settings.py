"""Curation settings: every rule is a named field of a dataclass, filled from defaults, a TOML file and ``--set``.

Keys are ``<source>.<field>`` (e.g. ``shp.min_score_ratio = 3``) or ``shared.<field>`` for the rules every
source shares (``shared.min_margin``), which a source may override (``ultrafeedback.min_margin = 0.5``).
A TOML file uses one table per source: ``[shp]`` / ``min_score_ratio = 3``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from pipelines.errors import UsageError
from pipelines.sources import ADAPTERS, MIXTURES, Adapter
from pipelines.sources.base import SharedRules


class SettingsError(UsageError, ValueError):
    """A configuration that names an unknown source or rule, or gives a value of the wrong type."""


def _split_union(annotation: str) -> tuple[str, bool]:
    """``"int | None"`` -> ``("int", True)``: the base type of an annotation and whether None is allowed."""
    parts = [p.strip() for p in annotation.split("|")]
    return next((p for p in parts if p != "None"), "None"), "None" in parts


def coerce(value: Any, annotation: str, key: str) -> Any:
    """``value`` (from TOML, ``--set`` text or a CLI flag) as the type a settings field is annotated with.

    The one coercion of every setting in the project. Text is parsed (``"3"`` -> 3, ``"true"``, ``"1.0,0.7"``
    for tuples, JSON for dicts, ``none`` where None is allowed); a value of another type (a TOML string for a
    number) is an error naming ``key``, never a silent conversion. Ints are accepted for floats.
    """
    base, optional = _split_union(annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation)))
    if value is None or (isinstance(value, str) and optional and base != "str" and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise SettingsError(f"{key}: a value is required")
    want = base.split("[")[0]
    text = value.strip() if isinstance(value, str) else None
    try:
        if want == "bool":
            if text is not None:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            if isinstance(value, bool):
                return value
        elif want == "int":
            if text is not None:
                return int(text)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif want == "float":
            if text is not None:
                return float(text)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif want == "str":
            if isinstance(value, str):
                return value
        elif want == "tuple":
            items = [v.strip() for v in text.split(",") if v.strip()] if text is not None else value
            if isinstance(items, (list, tuple)):
                inner = base[base.index("[") + 1:].split(",")[0].strip() if "[" in base else "str"
                return tuple(coerce(v, inner, key) for v in items)
        elif want == "dict":
            parsed = json.loads(text) if text is not None else value
            if isinstance(parsed, dict):
                return parsed
        else:
            return value  # a type the coercion does not know: the dataclass checks it
    except (ValueError, json.JSONDecodeError):
        pass
    raise SettingsError(f"{key}: expected {base}{' or none' if optional else ''}, got {value!r}")


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
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise SettingsError(f"unknown setting {section}.{name}; known: {', '.join(fields) or '(none)'}")
        kwargs[name] = coerce(value, fields[name].type, f"{section}.{name}")
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
