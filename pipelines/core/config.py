"""Presets for the training jobs and the online iteration: TOML files, then ``--config FILE``, then ``--set``.

A preset is a TOML file in ``pipelines/presets/`` (``paper``: the recipe's numbers; ``cpu``: small enough
for a 2-core machine). Each section fills one settings dataclass (``[reward_model]``, ``[dpo]``,
``[prompts]``, ``[generate]``, ``[score]``, ``[select]``, …); a user's ``--config my.toml`` overrides the preset and
``--set dpo.beta=0.2`` overrides both. Unknown sections or keys, and values of the wrong type, are errors
raised before any work starts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefhouse.pipelines.core.settings import SettingsError, coerce, load_config, merge, parse_overrides

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
SECTIONS = {"reward_model", "dpo", "prompts", "generate", "score", "select", "iteration", "evaluate", "judge"}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def load_layers(preset: str, config: Path | None = None, overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The merged sections of ``preset`` (a name or a TOML path), an optional config file and ``--set`` items."""
    return merge(preset_layer(preset), load_config(config), parse_overrides(overrides or []))


def preset_layer(preset: str) -> dict[str, dict[str, Any]]:
    """A preset's sections; one that says ``extends = "paper"`` is that preset with its own sections over it."""
    path = PRESETS_DIR / f"{preset}.toml"
    if not path.exists():
        path = Path(preset)
        if not path.exists():
            raise SettingsError(f"unknown preset {preset!r}; known: {', '.join(preset_names())} (or a TOML file)")
    values = load_config(path)
    base = values.pop("extends", None)
    return merge(preset_layer(base), values) if base else values


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


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _preset_values() -> dict[str, dict[str, dict[str, Any]]]:
    return {name: preset_layer(name) for name in preset_names()}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, section: str, prefixed: bool = True,
                        aliases: dict[str, str] | None = None, presets: dict[str, dict[str, dict[str, Any]]] | None = None) -> None:
    """One flag per field of dataclass ``cls``: ``--section.name`` (``--name`` when not ``prefixed``), plus ``aliases``.

    Its help is the field's ``help`` metadata, its default and the presets' values; a flag given on the
    command line is the last layer, over the preset, ``--config`` and ``--set``, and is coerced like them.
    """
    presets = _preset_values() if presets is None else presets
    group = parser.add_argument_group(f"[{section}] settings (--set {section}.KEY=VALUE, or these flags)")
    for f in dataclasses.fields(cls):
        names = [f"--{section}.{f.name}" if prefixed else f"--{f.name.replace('_', '-')}"]
        names += [a for a, key in (aliases or {}).items() if key == f"{section}.{f.name}"]
        set_by = ", ".join(f"{name}: {values[section][f.name]!r}" for name, values in presets.items() if f.name in values.get(section, {}))
        text = f.metadata.get("help", "")
        text = f"{text + '. ' if text else ''}Default {_default(f)!r}" + (f" [{set_by}]" if set_by else "")
        group.add_argument(*names, dest=f"{section}__{f.name}", default=None, metavar="V", help=text.replace("%", "%%"))


def flag_layer(args: argparse.Namespace, sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """The settings given as flags (see :func:`add_dataclass_flags`), as a layer."""
    layer: dict[str, dict[str, Any]] = {}
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            value = getattr(args, f"{section}__{f.name}", None)
            if value is not None:
                layer.setdefault(section, {})[f.name] = value
    return layer


def dataclass_from_flags(cls: type, args: argparse.Namespace, section: str) -> Any:
    """An instance of ``cls`` from the flags :func:`add_dataclass_flags` made (coerced and checked like ``--set``)."""
    return build(cls, flag_layer(args, {section: cls}), section)


def add_config_arguments(parser: argparse.ArgumentParser, sections: dict[str, type], lake_default: str,
                         aliases: dict[str, str] | None = None) -> None:
    """The settings flags of a job: --preset, --config, --set, --lake, and one flag per setting of ``sections``.

    Layers, later wins: the dataclass defaults, the preset, ``--config FILE``, ``--set SECTION.KEY=VALUE``,
    the setting's own flag (``--dpo.beta 0.2``; ``aliases`` give some a short name, e.g. ``--engine``).
    """
    parser.add_argument("--preset", default="cpu", help=f"{' | '.join(preset_names())} | a TOML file (default: cpu)")
    parser.add_argument("--config", type=Path, help="a TOML file whose sections override the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable); every setting is listed below with its default")
    parser.add_argument("--lake", default=lake_default, help=f"lake URI: a folder or an object-store URI (default: {lake_default})")
    presets = _preset_values()  # read once for every section's help
    for section, cls in sections.items():
        add_dataclass_flags(parser, cls, section, aliases=aliases, presets=presets)
    parser.set_defaults(_sections=sections)


def layers_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The preset, --config, --set and flag layers of a job's arguments, merged and checked (unknown sections fail)."""
    layers = merge(load_layers(args.preset, args.config, list(args.overrides)), flag_layer(args, args._sections))
    check_sections(layers)
    return layers


# ---------------------------------------------------------------------------------------------- command lines
# Every job's parser is built from settings dataclasses and core.names alone, in a module that imports no data
# library (the job's settings module, or pipelines/parsers.py for the entry points), so that a --help costs an
# interpreter's start-up; the job's main parses with the same function. pipelines/parsers.py names them all.


def job_doc(module: str) -> str:
    """A job module's docstring, read from its source without importing the module (and what it imports)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module {module}")
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text()), clean=False) or ""


def job_summary(module: str) -> str:
    """The first paragraph of a job module's docstring: its parser's description."""
    return job_doc(module).split("\n\n")[0]


def parser_with_examples(prog: str, module: str) -> argparse.ArgumentParser:
    """A parser described by a job module's docstring: the first paragraph, then the rest (examples kept as written)."""
    summary, _, rest = job_doc(module).partition("\n\n")
    return argparse.ArgumentParser(prog=prog, description=summary, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=rest)


def answer_help(build_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None = None) -> None:
    """Print a job's help and exit if ``argv`` (default: the command line) asks for it, building only its parser.

    ``prefhouse <job> --help`` and the card's scripts call it before importing the job (a script at its top,
    before its own imports), so a help costs an interpreter's start-up, not polars, DuckDB or torch.
    """
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        build_parser().parse_args(argv)  # prints the help and exits
