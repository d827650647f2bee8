"""The ten source adapters of the recipe, by name (the names of the raw-source folders)."""

from __future__ import annotations

from prefhouse.pipelines.core.schema import OFFLINE_SOURCES
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

# The recipe's mixtures (RECIPE §1). mix1's "summarization" source is not among the ten and is not curated.
MIXTURES: dict[str, list[str]] = {
    "mix1": ["hh_rlhf", "shp", "ultrafeedback"],
    "mix2": list(ADAPTERS),
}

__all__ = ["ADAPTERS", "MIXTURES", "Adapter"]
