"""Settings every job shares: one coercion, layered TOML and ``--set`` values, and the error they raise.

Every setting of the project is a field of a dataclass; its value comes from a default, a preset, a TOML
file and ``--set section.key=value``, in that order, and is coerced once, by :func:`coerce`, to the type
the field is annotated with. A value that does not fit, an unknown section or key, fails before any work.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefhouse.pipelines.core.errors import UsageError


class SettingsError(UsageError, ValueError):
    """A configuration that names an unknown source or rule, or gives a value of the wrong type."""


def setting(default: Any = dataclasses.MISSING, help: str = "", factory: Callable[[], Any] | None = None) -> Any:
    """A settings field whose help text travels with it (``--help`` prints it beside the default)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


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
    """``["shp.min_score_ratio=3"]`` -> ``{"shp": {"min_score_ratio": "3"}}``; a key of a table setting nests:
    ``dpo.trainer.max_grad_norm=0.5`` -> ``{"dpo": {"trainer": {"max_grad_norm": "0.5"}}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise SettingsError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        table, dot, inner = name.partition(".")
        if dot:
            out.setdefault(section, {}).setdefault(table, {})[inner] = value.strip()
        else:
            out.setdefault(section, {})[name] = value.strip()
    return out


def load_config(path: Path | None) -> dict[str, dict[str, Any]]:
    """The sections of a TOML file (or of a JSON object, as a launched job receives its settings)."""
    if path is None:
        return {}
    if Path(path).suffix == ".json":
        return json.loads(Path(path).read_text())
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Later layers win, key by key; a table setting (``[dpo.trainer]``) merges key by key too."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged = out.setdefault(section, {})
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    value = {**merged[key], **value}
                merged[key] = value
    return out
