"""Curation settings: every rule is a named field of a dataclass, filled from defaults, a TOML file and ``--set``.

Keys are ``<source>.<field>`` (e.g. ``shp.min_score_ratio = 3``) or ``shared.<field>`` for the rules every
source shares (``shared.min_margin``), which a source may override (``ultrafeedback.min_margin = 0.5``).
A TOML file uses one table per source: ``[shp]`` / ``min_score_ratio = 3``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefhouse.pipelines.core.settings import SettingsError, coerce
from prefhouse.pipelines.sources import ADAPTERS, MIXTURES, Adapter
from prefhouse.pipelines.sources.base import SharedRules


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


def rule_sections() -> dict[str, type]:
    """The curation's settings sections: ``shared`` and each source that has settings, with their dataclasses."""
    return {"shared": SharedRules, **{name: cls.Settings for name, cls in ADAPTERS.items() if dataclasses.fields(cls.Settings)}}
