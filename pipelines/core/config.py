"""Presets for the training jobs and the online iteration: TOML files, then ``--config FILE``, then ``--set``.

A preset is a TOML file in ``pipelines/presets/`` (``paper``: the recipe's numbers; ``cpu``: small enough
for a 2-core machine). Each section fills one settings dataclass (``[reward_model]``, ``[dpo]``,
``[prompts]``, ``[generate]``, ``[select]``); a user's ``--config my.toml`` overrides the preset and
``--set dpo.beta=0.2`` overrides both. Unknown sections or keys, and values of the wrong type, are errors
raised before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from prefhouse.pipelines.core.settings import SettingsError, coerce, load_config, merge, parse_overrides

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
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


def build(cls: type, layers: dict[str, dict[str, Any]], section: str, **fixed: Any) -> Any:
    """An instance of dataclass ``cls`` from ``layers[section]`` (plus ``fixed`` values the caller owns)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = layers.get(section, {})
    unknown = set(values) - set(fields)
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(f'{section}.{k}' for k in sorted(unknown))}; known: {', '.join(fields)}")
    kwargs = {name: coerce(v, fields[name].type, f"{section}.{name}") for name, v in values.items()}
    try:
        return cls(**{**kwargs, **fixed})
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"[{section}] {exc}") from exc


def check_sections(layers: dict[str, dict[str, Any]], known: set[str] = SECTIONS) -> None:
    unknown = set(layers) - known
    if unknown:
        raise SettingsError(f"unknown config section(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, section: str) -> None:
    """One ``--name`` flag per field of dataclass ``cls`` (help: the field's ``help`` metadata and default)."""
    group = parser.add_argument_group(f"[{section}] settings")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{section}__{f.name}", default=None, metavar=f.type.upper().split("[")[0].split(" ")[0] if isinstance(f.type, str) else None,
                           help=f"{help_text + '; ' if help_text else ''}default: {default!r} (as --set {section}.{f.name}=…)")


def dataclass_from_flags(cls: type, args: argparse.Namespace, section: str, **layers: Any) -> Any:
    """An instance of ``cls`` from the flags :func:`add_dataclass_flags` made (coerced and checked like ``--set``)."""
    given = {f.name: getattr(args, f"{section}__{f.name}") for f in dataclasses.fields(cls) if getattr(args, f"{section}__{f.name}", None) is not None}
    return build(cls, {section: {**layers, **given}}, section)


def add_config_arguments(parser: argparse.ArgumentParser, sections: dict[str, type], lake_default: str) -> None:
    """The layered-settings flags every job takes (--preset, --config, --set, --lake), and an epilog listing every setting."""
    parser.add_argument("--preset", default="cpu", help=f"{' | '.join(preset_names())} | a TOML file (default: cpu)")
    parser.add_argument("--config", type=Path, help="a TOML file whose sections override the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable); every setting is listed below")
    parser.add_argument("--lake", default=lake_default, help=f"lake URI: a folder or an object-store URI (default: {lake_default})")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ((parser.epilog or "") + "\n\n" + describe(sections)).strip()


def describe(sections: dict[str, type]) -> str:
    """Every setting of ``sections`` with its default and, where a preset changes it, the preset's value."""
    presets = {name: load_config(PRESETS_DIR / f"{name}.toml") for name in preset_names()}
    lines = ["settings: SECTION.KEY = default   [preset values where a preset sets them]"]
    for section, cls in sections.items():
        lines.append(f"[{section}]")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            set_by = ", ".join(f"{name}: {values[section][f.name]!r}" for name, values in presets.items() if f.name in values.get(section, {}))
            lines.append(f"  {section}.{f.name} = {default!r}" + (f"   [{set_by}]" if set_by else ""))
    return "\n".join(lines)


def layers_from_args(args: argparse.Namespace, *extra_overrides: str) -> dict[str, dict[str, Any]]:
    """The preset, --config and --set layers of a job's arguments (plus overrides its own flags imply), checked."""
    layers = load_layers(args.preset, args.config, list(args.overrides) + [o for o in extra_overrides if o])
    check_sections(layers)
    return layers
