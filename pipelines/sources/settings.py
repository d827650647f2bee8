"""Curation settings: every rule is a named field of a dataclass, filled from defaults, a TOML file and ``--set``.

Keys are ``<source>.<field>`` (e.g. ``shp.min_score_ratio = 3``) or ``shared.<field>`` for the rules every
source shares (``shared.min_margin``), which a source may override (``ultrafeedback.min_margin = 0.5``).
A TOML file uses one table per source: ``[shp]`` / ``min_score_ratio = 3``.

The rules live here, apart from the adapters that apply them (which import polars), so that ``prefhouse
curate --help`` lists them without loading any data library; an adapter finds its own in :data:`RULES`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefhouse.pipelines.core.config import add_dataclass_flags, job_summary
from prefhouse.pipelines.core.names import DEFAULT_LAKE, DEFAULT_SAMPLES, OFFLINE_SOURCES
from prefhouse.pipelines.core.settings import SettingsError, coerce, setting

# The recipe's mixtures (RECIPE §1). mix1's "summarization" source is not among the ten and is not curated.
MIXTURES: dict[str, list[str]] = {
    "mix1": ["hh_rlhf", "shp", "ultrafeedback"],
    "mix2": list(OFFLINE_SOURCES),
}

HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
PKU_PREFERENCES = ("safer", "better", "agree")


@dataclass(frozen=True)
class SharedRules:
    """Rules every source shares. Changing a value changes the recorded rule version."""

    min_margin: float = setting(0.0, "drop pairs whose score margin is below this (paper: small margins; no value published)")
    drop_ties: bool = setting(True, "drop pairs with equal scores: they carry no preference")


@dataclass(frozen=True)
class NoRules:
    """The rules of a source that has none of its own (the shared ones still apply)."""


@dataclass(frozen=True)
class SHPRules:
    min_score_ratio: float = setting(2.0, "keep pairs whose score_ratio is strictly above this (paper: > 2)")
    max_pairs_per_post: int = setting(5, "at most this many pairs per post, the highest score ratios first (paper: 5)")


@dataclass(frozen=True)
class HelpSteerRules:
    score: str = setting("mean_ex_verbosity", "mean_ex_verbosity (Tulu 2.5: the mean of the attributes except verbosity) or one attribute's name")
    max_responses_per_prompt: int = setting(4, "compare at most the first this many responses of a prompt (paper: 4)")

    def __post_init__(self) -> None:
        if self.score != "mean_ex_verbosity" and self.score not in HELPSTEER_ATTRIBUTES:
            raise ValueError(f"helpsteer.score must be mean_ex_verbosity or one of {HELPSTEER_ATTRIBUTES}, not {self.score!r}")


@dataclass(frozen=True)
class PKUSafeRLHFRules:
    preference: str = setting("safer", "safer (the safety preference) | better (helpfulness) | agree (both agree)")

    def __post_init__(self) -> None:
        if self.preference not in PKU_PREFERENCES:
            raise ValueError(f"pku_saferlhf_30k.preference must be one of {PKU_PREFERENCES}, not {self.preference!r}")


@dataclass(frozen=True)
class UltraFeedbackRules:
    score: str = setting("fine_grained", "fine_grained: the mean of the four aspect ratings (Tulu 2.5 shows it beats overall_score) | "
                         "overall: the critique's overall_score (upstream bug: some 1-rated completions carry 10)")

    def __post_init__(self) -> None:
        if self.score not in ("fine_grained", "overall"):
            raise ValueError(f"ultrafeedback.score must be fine_grained or overall, not {self.score!r}")


@dataclass(frozen=True)
class OrcaRules:
    min_chosen_score: float = setting(8.0, "drop rows whose chosen_score is below this (the common filter in the wild: >= 8)")
    drop_ties: bool = setting(True, "drop rows GPT-4 rated as a tie (status tie)")
    drop_gsm8k_train: bool = setting(True, "drop prompts of the GSM8K train set (contamination)")


# Each source's own rules (a source not named here has none: NoRules)
RULES: dict[str, type] = {
    "shp": SHPRules,
    "helpsteer": HelpSteerRules,
    "pku_saferlhf_30k": PKUSafeRLHFRules,
    "ultrafeedback": UltraFeedbackRules,
    "distilabel_intel_orca_dpo_pairs": OrcaRules,
}


def resolve_sources(spec: str) -> list[str]:
    """``all``, a mixture name (mix1, mix2) or comma-separated source names, in the canonical order."""
    if spec == "all":
        return list(OFFLINE_SOURCES)
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in MIXTURES:
            names += MIXTURES[part]
        elif part in OFFLINE_SOURCES:
            names.append(part)
        else:
            raise SettingsError(f"unknown source {part!r}; known: all, {', '.join(MIXTURES)}, {', '.join(OFFLINE_SOURCES)}")
    return [n for n in OFFLINE_SOURCES if n in set(names)]


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


def source_rules(config: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, SharedRules]]:
    """Every source's (own rules, shared rules) from merged config layers; an unknown section or key, or a bad
    value, is an error, for every source whether curated or not, before any work."""
    unknown = set(config) - set(OFFLINE_SOURCES) - {"shared"}
    if unknown:
        raise SettingsError(f"unknown config section(s) {sorted(unknown)}; known: shared, {', '.join(OFFLINE_SOURCES)}")
    shared_fields = {f.name for f in dataclasses.fields(SharedRules)}
    rules = {}
    for name in OFFLINE_SOURCES:
        section = dict(config.get(name, {}))
        own_shared = {k: section.pop(k) for k in list(section) if k in shared_fields}
        rules[name] = (_build(RULES.get(name, NoRules), section, name), _build(SharedRules, {**config.get("shared", {}), **own_shared}, name))
    return rules


def rule_sections() -> dict[str, type]:
    """The curation's settings sections: ``shared`` and each source that has rules of its own, with their dataclasses."""
    return {"shared": SharedRules, **RULES}


def curate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python pipelines/curate.py",
        description=job_summary("prefhouse.pipelines.curate"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Rule settings, in layers (later wins): defaults, --config, --set SOURCE.RULE=VALUE, each rule's own flag (listed above).",
    )
    parser.add_argument("--sources", default="all", help="all, mix1, mix2, or comma-separated source names (default: all)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_SAMPLES,
                        help="read raw files from DIR/<source>/ (.jsonl/.json[.gz]/.parquet in the hub schema); default: the bundled samples")
    parser.add_argument("--hub", action="store_true", help="load from the Hugging Face hub with datasets.load_dataset at the pinned revisions (needs network)")
    parser.add_argument("--lake", default=DEFAULT_LAKE, help=f"lake URI: a folder or an object-store URI (default: {DEFAULT_LAKE})")
    parser.add_argument("--config", type=Path, help="TOML file of rule settings, one [source] table each, plus [shared]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SOURCE.RULE=VALUE",
                        help="override one rule setting, e.g. --set shp.min_score_ratio=3 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--debug", action="store_true", help="on an error, print the whole traceback instead of one line")
    for section, settings in rule_sections().items():  # --shp.min_score_ratio 3, …: every rule with its help and default
        add_dataclass_flags(parser, settings, section)
    return parser
