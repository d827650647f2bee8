"""The ten source adapters of the recipe, by name (the names of the raw-source folders), and building them from settings."""

from __future__ import annotations

from typing import Any

from prefhouse.pipelines.core.names import OFFLINE_SOURCES
from prefhouse.pipelines.sources.base import Adapter
from prefhouse.pipelines.sources.codeultrafeedback import CodeUltraFeedback
from prefhouse.pipelines.sources.distilabel import (
    DistilabelCapybara,
    DistilabelMath,
    DistilabelOrca,
)
from prefhouse.pipelines.sources.helpsteer import HelpSteer
from prefhouse.pipelines.sources.hh_rlhf import HHRLHF
from prefhouse.pipelines.sources.pku_saferlhf import PKUSafeRLHF30K
from prefhouse.pipelines.sources.settings import RULES, source_rules
from prefhouse.pipelines.sources.shp import SHP
from prefhouse.pipelines.sources.ultrafeedback import UltraFeedback
from prefhouse.pipelines.sources.ultrainteract import UltraInteractPair

ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a
    for a in (
        HHRLHF, SHP, HelpSteer, PKUSafeRLHF30K, UltraFeedback, UltraInteractPair, CodeUltraFeedback,
        DistilabelMath, DistilabelOrca, DistilabelCapybara,
    )
}

if tuple(ADAPTERS) != OFFLINE_SOURCES:  # the lake's partitions and the adapters must name the same sources
    raise ImportError(f"adapters {tuple(ADAPTERS)} differ from the schema's OFFLINE_SOURCES {OFFLINE_SOURCES}")
if set(RULES) - set(ADAPTERS):  # a source's rules under a name no adapter has would never apply
    raise ImportError(f"rules for unknown sources {sorted(set(RULES) - set(ADAPTERS))}")


def build_adapters(names: list[str], config: dict[str, dict[str, Any]]) -> list[Adapter]:
    """Adapters for ``names`` with their settings; unknown sections or keys are errors, before any work."""
    rules = source_rules(config)
    return [cls(*rules[name]) for name, cls in ADAPTERS.items() if name in names]
