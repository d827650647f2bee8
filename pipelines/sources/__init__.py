"""The ten source adapters of the recipe, by name (the names of the raw-source folders)."""

from __future__ import annotations

from pipelines.sources.base import Adapter
from pipelines.sources.codeultrafeedback import CodeUltraFeedback
from pipelines.sources.distilabel import (
    DistilabelCapybara,
    DistilabelMath,
    DistilabelOrca,
)
from pipelines.sources.helpsteer import HelpSteer
from pipelines.sources.hh_rlhf import HHRLHF
from pipelines.sources.pku_saferlhf import PKUSafeRLHF30K
from pipelines.sources.shp import SHP
from pipelines.sources.ultrafeedback import UltraFeedback
from pipelines.sources.ultrainteract import UltraInteractPair

ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a
    for a in (
        HHRLHF, SHP, HelpSteer, PKUSafeRLHF30K, UltraFeedback, UltraInteractPair, CodeUltraFeedback,
        DistilabelMath, DistilabelOrca, DistilabelCapybara,
    )
}

# The recipe's mixtures (RECIPE §1). mix1's "summarization" source is not among the ten and is not curated.
MIXTURES: dict[str, list[str]] = {
    "mix1": ["hh_rlhf", "shp", "ultrafeedback"],
    "mix2": list(ADAPTERS),
}

__all__ = ["ADAPTERS", "MIXTURES", "Adapter"]
