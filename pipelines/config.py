"""Presets for the training jobs and the online iteration: TOML files, then ``--config FILE``, then ``--set``.

A preset is a TOML file in ``pipelines/presets/`` (``paper``: the recipe's numbers; ``cpu``: small enough
for a 2-core machine). Each section fills one settings dataclass (``[reward_model]``, ``[dpo]``,
``[prompts]``, ``[generate]``, ``[select]``); a user's ``--config my.toml`` overrides the preset and
``--set dpo.beta=0.2`` overrides both. Unknown sections or keys, and values of the wrong type, are errors
raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipelines.settings import SettingsError, load_config, merge, parse_overrides

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
SECTIONS = {"reward_model", "dpo", "prompts", "generate", "select", "iteration"}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_layers(preset: str, config: Path | None = None, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The merged sections of ``preset`` (a name or a TOML path), an optional config file and ``--set`` items."""
    path = PRESETS_DIR / f"{preset}.toml"
    if not path.exists():
        path = Path(preset)
        if not path.exists():
            raise SettingsError(f"unknown preset {preset!r}; known: {', '.join(preset_names())} (or a TOML file)")
    return merge(load_config(path), load_config(config), parse_overrides(overrides or []))


def _coerce(value: Any, field: dataclasses.Field, key: str) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if isinstance(value, str):
        if kind.startswith("dict"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{key}: expected a JSON object, got {value!r}") from exc
        elif kind.startswith("tuple"):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif kind.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SettingsError(f"{key}: expected true or false, got {value!r}")
            return value.lower() in ("true", "1")
        elif kind.startswith("int"):
            if value.lower() in ("none", "null") and "None" in kind:
                return None
            try:
                return int(value)
            except ValueError as exc:
                raise SettingsError(f"{key}: expected an integer, got {value!r}") from exc
        elif kind.startswith("float"):
            try:
                return float(value)
            except ValueError as exc:
                raise SettingsError(f"{key}: expected a number, got {value!r}") from exc
        elif value.lower() in ("none", "null") and "None" in kind:
            return None
    if kind.startswith("tuple") and isinstance(value, list):
        inner = kind[kind.index("[") + 1:].split(",")[0].strip() if "[" in kind else "str"
        return tuple(float(v) if inner == "float" else int(v) if inner == "int" else str(v) for v in value)
    if kind.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def build(cls: type, layers: dict[str, dict[str, Any]], section: str, **fixed: Any) -> Any:
    """An instance of dataclass ``cls`` from ``layers[section]`` (plus ``fixed`` values the caller owns)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = layers.get(section, {})
    unknown = set(values) - set(fields)
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(f'{section}.{k}' for k in sorted(unknown))}; known: {', '.join(fields)}")
    kwargs = {name: _coerce(v, fields[name], f"{section}.{name}") for name, v in values.items()}
    try:
        return cls(**{**kwargs, **fixed})
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[{section}] {exc}") from exc


def check_sections(layers: dict[str, dict[str, Any]], known: set[str] = SECTIONS) -> None:
    unknown = set(layers) - known
    if unknown:
        raise SettingsError(f"unknown config section(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
